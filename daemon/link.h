/* daemon/link.h - the worker link (prefix link_): gpp-worker processes
 * connect over TCP on --worker-listen and speak gpp/proto.h.  One libuv loop
 * on its own thread holds every connection, the lease of every worker, the
 * scheduler's passes (daemon/gppd_sched.h) and the transfers (fetch/blob).
 *
 * Per connection: an incremental decoder whose frame limit starts at 64 KiB
 * and is raised to GPP_FRAME_MAX after a valid hello; the hello's token must
 * be an active worker token (compared by hash); welcome gives the worker
 * its id, heartbeat_ms 5000 and grace_s = --worker-grace.  A frame over the
 * limit, an unknown type, a malformed message, a bad token, a
 * result/metrics/fail for a stage the connection does not hold (stage id +
 * attempt: the fencing token), a result whose output was not uploaded, or a
 * blob whose sha256 does not match: logged, that connection closed, nothing
 * changed.
 *
 * Leases: any frame renews the worker's lease; a worker silent for grace_s
 * loses its stage (queued again, reason worker_lost).  A worker whose
 * connection drops keeps its stage for the grace window: reconnecting with
 * hello.worker_id and hello.running = {stage_id, attempt} re-attaches it and
 * nothing is rescheduled; coming back without the stage, or too late, the
 * stage is given to another worker (and the late worker is told to cancel).
 * A ping carrying the extension field "draining": true (worker_link.h) marks
 * the worker draining: it is assigned nothing new.
 * At start the link reconciles: stages left assigned/running get a fresh
 * lease for the worker that held them, so it can re-attach.
 *
 * Other threads (the HTTP API) reach the loop only through link_kick,
 * link_cancel_job and link_drain_worker, which queue a command and wake it. */
#ifndef GPPD_LINK_H
#define GPPD_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

struct gppd;
typedef struct link_server link_server;

#define LINK_HEARTBEAT_MS 5000          /* welcome.heartbeat_ms (a third of --worker-grace
                                           when that is under 15 s) */
#define LINK_HELLO_MAX (64 * 1024)      /* frame limit before a valid hello */
#define LINK_UPLOAD_MAX ((uint64_t)4 << 30) /* largest blob a worker may upload */

/* Listen on d->cfg.worker_listen (port 0: any; see link_port), reconcile
 * the stages left running, and start the loop thread.  Logs
 * "worker link listening worker=ADDR:PORT".  Returns 0 with *out, or an
 * error ("cannot listen on ..."). */
int link_start(link_server **out, struct gppd *d, gpp_error *err);

/* The bound port. */
uint16_t link_port(const link_server *l);

/* The address local workers connect to ("127.0.0.1:PORT" when listening on
 * a wildcard address) into buf. */
void link_connect_addr(const link_server *l, char *buf, size_t n);

/* Stop: close every connection (workers keep their stages in the store and
 * re-attach after a restart), stop the thread, free l.  NULL is fine. */
void link_stop(link_server *l);

/* A job was submitted or retried: run a scheduler pass soon.  Any thread;
 * NULL is fine. */
void link_kick(link_server *l);

/* A job was cancelled: tell the workers holding its stages to stop.  Any
 * thread; NULL is fine. */
void link_cancel_job(link_server *l, int64_t job_seq);

/* Tell a worker to drain: finish its stage, take nothing new, leave.  Any
 * thread; NULL is fine. */
void link_drain_worker(link_server *l, const char *worker_id);

#endif
