/* daemon/main.c - gppd: flags, signals, start, wait, stop. */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "gpp_config.h"
#include "gppd.h"
#include "log.h"

/* Tell systemd (Type=notify) how we are: "READY=1", "STOPPING=1".  Does
 * nothing unless $NOTIFY_SOCKET names a socket. */
static void notify_systemd(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    size_t n = path ? strlen(path) : 0;
    if (n < 2 || (path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path)
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';               /* an abstract socket */
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    (void)w;
    close(fd);
}

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
    notify_systemd("READY=1");
    int sig = 0;
    sigwait(&stop, &sig);
    log_info("stopping", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    notify_systemd("STOPPING=1");
    gppd_close(d);
    log_info("stopped", "%s", "");
    return 0;
}
