/* worker/link/worker_link.h - gpp-worker's daemon mode: the worker side of
 * the worker link (gpp/proto.h), a libuv client of gppd.
 *
 *   gpp-worker --connect HOST:PORT --token-file F [--device cpu|cuda[:N]]
 *              [--threads N] [--cache-dir DIR] [--labels k=v,...] [--name NAME]
 *
 * Connects, says hello (devices, threads, labels, the blobs it has cached,
 * the stage it still runs after a reconnect), takes assignments, fetches
 * what it lacks into --cache-dir (content-addressed by sha256, verified),
 * runs the stage (gpp/stages.h) on its own thread while the loop keeps
 * heartbeating (pings carry the stage's progress), streams metrics in
 * acknowledged batches (<= 4096 points or every 250 ms; kept until acked,
 * sent again after a reconnect), forwards the stage's log lines, uploads
 * the output checkpoint as blob frames and sends the result.  cancel stops
 * the stage between batches.  The connection comes back after a loss with
 * exponential back-off (0.5 s doubling to 10 s, jittered) and re-attaches
 * to the stage it still runs.  SIGTERM or a drain frame: finish the current
 * stage, take nothing new, exit 0.  SIGINT: stop the stage now, give it back
 * to the daemon, exit 0.  A worker that drains on its own (a signal) says so
 * at once with the extension field "draining": true in its pings (gpp/proto.h:
 * unknown fields are ignored), so gppd assigns it nothing new meanwhile.
 *
 * Wire it into worker/main.c as
 *     if (argc > 1 && strcmp(argv[1], "--connect") == 0)
 *         return gpp_worker_connect_main(argc, argv);
 */
#ifndef GPP_WORKER_LINK_H
#define GPP_WORKER_LINK_H

/* Run the daemon mode with the command line above (argv[0] is the program;
 * the options may come in any order).  Returns the exit status: 0 after a
 * drain or SIGINT, 1 on a fatal error (the daemon refused the token, the
 * device cannot be opened, the cache folder cannot be made), 2 on bad
 * usage; --help prints the usage and returns 0. */
int gpp_worker_connect_main(int argc, char **argv);

#endif
