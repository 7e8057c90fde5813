/* daemon/gppd.h - the daemon context: one struct that every part of gppd
 * reaches through its closure (MHD's cls, later libuv's handle->data), so
 * tests can run two daemons in one process (prefix gppd_).
 *
 *   gppd_open   data folder (0700, locked), gppd.db (migrations), artifacts,
 *               admin/worker tokens on first start, built-in data sets
 *   gppd_start  the HTTP server (and, later, the worker link and scheduler)
 *   gppd_stop   stop accepting, let in-flight requests finish
 *   gppd_close  close the database and free everything
 */
#ifndef GPPD_GPPD_H
#define GPPD_GPPD_H

#include <limits.h>
#include <stdint.h>

#include "artifacts.h"
#include "config.h"
#include "gpp/error.h"
#include "store.h"

struct api;

typedef struct gppd {
    gppd_config cfg;                     /* settings as started */
    store *store;                        /* DATA_DIR/gppd.db */
    artifacts *artifacts;                /* DATA_DIR/artifacts/ */
    struct api *api;                     /* HTTP server, NULL until started */
    int lock_fd;                         /* DATA_DIR/gppd.lock, flock'ed */
    char web_root[PATH_MAX];             /* realpath of --web-root, "" = none */
    char admin_token_path[PATH_MAX];     /* DATA_DIR/admin.token */
    char worker_token_path[PATH_MAX];    /* DATA_DIR/worker.token */
    int64_t started_at;                  /* unix ms */
    /* later: struct link *link; struct sched *sched; */
} gppd;

/* Prepare everything but the network: create DATA_DIR (0700) and lock it
 * (one gppd per folder), open the store, create the admin and worker tokens
 * when there are none (files DATA_DIR/admin.token, worker.token, mode 0600),
 * register fashion-mnist when its Debian package is installed.  Returns 0
 * with *out set, or an error with one clear sentence in *err. */
int gppd_open(gppd **out, const gppd_config *cfg, gpp_error *err);

/* Start serving HTTP on cfg.listen (port 0: any free port, see
 * gppd_http_port) and log "listening http=ADDR:PORT". */
int gppd_start(gppd *d, gpp_error *err);

/* The bound HTTP port (after gppd_start), 0 before. */
uint16_t gppd_http_port(const gppd *d);

/* Stop accepting, wait (bounded) for in-flight requests, stop the server. */
void gppd_stop(gppd *d);

/* Stop if needed, close the store and free d. NULL is fine. */
void gppd_close(gppd *d);

#endif
