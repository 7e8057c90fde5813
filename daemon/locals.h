/* daemon/locals.h - `gppd --local-workers N` (prefix locals_): N gpp-worker
 * children that connect to this gppd's worker link, the single-machine
 * setup.  Each runs
 *
 *   gpp-worker --connect ADDR --token-file DATA_DIR/worker.token --device cpu
 *              --threads T --cache-dir DATA_DIR/local-workers/I
 *
 * with T = max(1, cores / N).  The binary: $GPP_WORKER_BIN, else
 * ../worker/gpp-worker next to gppd's own path (the build tree), else
 * gpp-worker beside gppd (an install), else gpp-worker on $PATH.
 *
 * A child that dies (not a clean exit 0: a drained worker stays stopped) is
 * started again after a back-off (1 s, doubling while it keeps dying young,
 * at most 30 s).  Children get SIGTERM (drain) should gppd itself die
 * (PR_SET_PDEATHSIG); locals_stop sends SIGINT (give the stage back now) and
 * waits, then SIGKILL. */
#ifndef GPPD_LOCALS_H
#define GPPD_LOCALS_H

#include <stddef.h>

#include "gpp/error.h"

struct gppd;
typedef struct locals locals;

#define LOCALS_MAX 64
#define LOCALS_STOP_WAIT_MS 10000

/* Find the worker binary into buf (size n).  0, or GPP_ENOTFOUND. */
int locals_find_worker(char *buf, size_t n);

/* Start n children connecting to connect_addr ("HOST:PORT") and a thread
 * that watches them.  Returns 0 with *out, or an error (binary not found,
 * cache folder, spawn). */
int locals_start(locals **out, struct gppd *d, int n, const char *connect_addr,
                 gpp_error *err);

/* Stop the children (SIGINT, wait up to LOCALS_STOP_WAIT_MS, SIGKILL) and
 * the thread; free.  NULL is fine. */
void locals_stop(locals *lw);

#endif
