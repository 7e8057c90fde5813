/* daemon/main.c - gppd: flags, signals, start, wait, stop. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "gpp_config.h"
#include "gppd.h"
#include "log.h"

int main(int argc, char **argv)
{
    log_init();
    gppd_config cfg;
    config_defaults(&cfg);
    gpp_error err = {0};
    if (config_parse_args(&cfg, argc, argv, &err) != 0) {
        fprintf(stderr, "gppd: %s\n", err.message);
        return 2;
    }
    if (cfg.help) {
        fputs(config_usage(), stdout);
        return 0;
    }
    if (cfg.version) {
        printf("gppd %s\n", GPP_VERSION);
        return 0;
    }
    umask(077);
    signal(SIGPIPE, SIG_IGN);
    /* block the stop signals in every thread; this one waits for them */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    gppd *d = NULL;
    if (gppd_open(&d, &cfg, &err) != 0 || gppd_start(d, &err) != 0) {
        fprintf(stderr, "gppd: %s\n", err.message);
        gppd_close(d);
        return 1;
    }
    int sig = 0;
    sigwait(&stop, &sig);
    log_info("stopping", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    gppd_close(d);
    log_info("stopped", "%s", "");
    return 0;
}
