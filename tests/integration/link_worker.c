/* `link_worker --connect HOST:PORT ...`: gpp_worker_connect_main as its own
 * program, so the integration tests (and gppd --local-workers, through
 * GPP_WORKER_BIN) drive the daemon mode exactly as `gpp-worker --connect`
 * does, without depending on worker/main.c's wiring. */
#include "worker_link.h"

int main(int argc, char **argv)
{
    return gpp_worker_connect_main(argc, argv);
}
