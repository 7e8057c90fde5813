/* daemon/gppd.h - the daemon context: one struct that every part of gppd
 * reaches through its closure (MHD's cls, later libuv's handle->data), so
 * tests can run two daemons in one process (prefix gppd_).
 *
 *   gppd_open   data folder (0700, locked), gppd.db (migrations), artifacts,
 *               admin/worker tokens on first start, built-in data sets
 *   gppd_start  the worker link and scheduler (daemon/link.h, gppd_sched.h), the
 *               HTTP server, the local workers (daemon/locals.h)
 *   gppd_stop   local workers give their stages back, stop accepting, let
 *               in-flight requests finish, close the worker link
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
struct link_server;
struct locals;

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
    struct link_server *link;            /* worker link + scheduler, NULL until started */
    struct locals *locals;               /* --local-workers children, NULL when none */
} gppd;

/* Prepare everything but the network: create DATA_DIR (0700) and lock it
 * (one gppd per folder), open the store, create the admin and worker tokens
 * when there are none (files DATA_DIR/admin.token, worker.token, mode 0600),
 * register fashion-mnist when its Debian package is installed.  Returns 0
 * with *out set, or an error with one clear sentence in *err. */
int gppd_open(gppd **out, const gppd_config *cfg, gpp_error *err);

/* Start the worker link on cfg.worker_listen (logs "worker link listening
 * worker=ADDR:PORT"), serve HTTP on cfg.listen (port 0: any free port, see
 * gppd_http_port; logs "listening http=ADDR:PORT"), then spawn
 * cfg.local_workers children. */
int gppd_start(gppd *d, gpp_error *err);

/* The bound HTTP port (after gppd_start), 0 before. */
uint16_t gppd_http_port(const gppd *d);

/* Stop the local workers (their stages go back to the queue), stop
 * accepting, wait (bounded) for in-flight requests and event streams, stop
 * the server, close the worker link. */
void gppd_stop(gppd *d);

/* Stop if needed, close the store and free d. NULL is fine. */
void gppd_close(gppd *d);

#endif
