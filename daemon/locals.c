/* daemon/locals.c - see locals.h. */
#include "locals.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gppd.h"
#include "log.h"
#include "util.h"

#define RESTART_MIN_MS 1000
#define RESTART_MAX_MS 30000
#define YOUNG_MS 10000          /* a child that dies younger than this backs off more */
#define WATCH_MS 100

typedef struct child {
    pid_t pid;                  /* 0: not running */
    int64_t started;            /* unix ms */
    int64_t restart_at;         /* unix ms, 0: none planned */
    int64_t backoff;            /* ms */
    bool done;                  /* exited cleanly: not restarted */
    char cache[PATH_MAX];
    char threads[24];
} child;

struct locals {
    gppd *d;
    char bin[PATH_MAX];
    char addr[CONFIG_ADDR_MAX + 8];
    int n;
    child kids[LOCALS_MAX];
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static bool executable(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

int locals_find_worker(char *buf, size_t n)
{
    const char *env = getenv("GPP_WORKER_BIN");
    if (env && env[0]) {
        snprintf(buf, n, "%s", env);
        return executable(buf) ? 0 : GPP_ENOTFOUND;
    }
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len > 0) {
        self[len] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            if ((size_t)snprintf(buf, n, "%s/../worker/gpp-worker", self) < n && executable(buf))
                return 0;
            if ((size_t)snprintf(buf, n, "%s/gpp-worker", self) < n && executable(buf))
                return 0;
        }
    }
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t k = strcspn(path, ":");
        if (k > 0 && (size_t)snprintf(buf, n, "%.*s/gpp-worker", (int)k, path) < n &&
            executable(buf))
            return 0;
        path += k;
        if (*path == ':')
            path++;
    }
    buf[0] = '\0';
    return GPP_ENOTFOUND;
}

/* fork + exec one child; 0 or -1 (errno). */
static int spawn(locals *lw, child *c)
{
    char *argv[] = {lw->bin, "--connect", lw->addr, "--token-file",
                    lw->d->worker_token_path, "--device", "cpu", "--threads", c->threads,
                    "--cache-dir", c->cache, NULL};
    pid_t parent = getpid();
    sigset_t none;
    sigemptyset(&none);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* the child: async-signal-safe calls only */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(0);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(lw->bin, argv);
        _exit(127);
    }
    c->pid = pid;
    c->started = gpp__now_ms();
    c->restart_at = 0;
    log_info("local worker started", "pid=%d threads=%s cache=%s", (int)pid, c->threads,
             c->cache);
    return 0;
}

static void *watch(void *arg)
{
    locals *lw = arg;
    pthread_mutex_lock(&lw->mu);
    while (!lw->stop) {
        int64_t now = gpp__now_ms();
        for (int i = 0; i < lw->n; i++) {
            child *c = &lw->kids[i];
            if (c->pid > 0) {
                int status = 0;
                pid_t r = waitpid(c->pid, &status, WNOHANG);
                if (r != c->pid)
                    continue;
                c->pid = 0;
                bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                int64_t age = now - c->started;
                if (clean) {
                    c->done = true;
                    log_info("local worker exited", "index=%d status=0", i);
                    continue;
                }
                c->backoff = age < YOUNG_MS && c->backoff ? c->backoff * 2 : RESTART_MIN_MS;
                if (c->backoff > RESTART_MAX_MS)
                    c->backoff = RESTART_MAX_MS;
                c->restart_at = now + c->backoff;
                if (WIFSIGNALED(status))
                    log_warn("local worker died; restarting", "index=%d signal=%d in_ms=%lld", i,
                             WTERMSIG(status), (long long)c->backoff);
                else
                    log_warn("local worker failed; restarting", "index=%d status=%d in_ms=%lld",
                             i, WEXITSTATUS(status), (long long)c->backoff);
            } else if (!c->done && c->restart_at && now >= c->restart_at) {
                if (spawn(lw, c) != 0) {
                    c->restart_at = now + RESTART_MAX_MS;
                    log_error("cannot start a local worker", "error=%s", strerror(errno));
                }
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WATCH_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&lw->cv, &lw->mu, &ts);
    }
    pthread_mutex_unlock(&lw->mu);
    return NULL;
}

int locals_start(locals **out, gppd *d, int n, const char *connect_addr, gpp_error *err)
{
    *out = NULL;
    if (n < 1 || n > LOCALS_MAX)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "local-workers",
                             "--local-workers must be 1..%d", LOCALS_MAX);
    locals *lw = calloc(1, sizeof *lw);
    if (!lw)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    lw->d = d;
    lw->n = n;
    snprintf(lw->addr, sizeof lw->addr, "%s", connect_addr);
    if (locals_find_worker(lw->bin, sizeof lw->bin) != 0) {
        free(lw);
        return gpp_error_set(err, GPP_ENOTFOUND, "not_found", "local-workers",
                             "--local-workers: the gpp-worker binary was not found (beside"
                             " gppd, in ../worker/, or on PATH); set GPP_WORKER_BIN");
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long threads = cores > 0 ? cores / n : 1;
    if (threads < 1)
        threads = 1;
    if (threads > 1024)
        threads = 1024;
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/local-workers", d->cfg.data_dir) >= sizeof dir ||
        gpp__mkdir_p(dir, 0700) != 0) {
        free(lw);
        return gpp_error_set(err, GPP_EIO, "io_error", "data-dir", "cannot create %s", dir);
    }
    for (int i = 0; i < n; i++) {
        snprintf(lw->kids[i].threads, sizeof lw->kids[i].threads, "%ld", threads);
        if ((size_t)snprintf(lw->kids[i].cache, sizeof lw->kids[i].cache, "%s/%d", dir, i) >=
            sizeof lw->kids[i].cache) {
            free(lw);
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data-dir",
                                 "data folder path too long");
        }
    }
    pthread_mutex_init(&lw->mu, NULL);
    pthread_cond_init(&lw->cv, NULL);
    for (int i = 0; i < n; i++) {
        if (spawn(lw, &lw->kids[i]) != 0) {
            int e = errno;
            lw->n = i;
            locals_stop(lw);
            return gpp_error_set(err, GPP_EIO, "io_error", "local-workers",
                                 "cannot start a local worker: %s", strerror(e));
        }
    }
    if (pthread_create(&lw->thread, NULL, watch, lw) != 0) {
        locals_stop(lw);
        return gpp_error_set(err, GPP_EIO, "internal", "", "cannot start a thread");
    }
    lw->thread_started = true;
    log_info("local workers started", "n=%d threads_each=%ld bin=%s connect=%s", n, threads,
             lw->bin, lw->addr);
    *out = lw;
    return 0;
}

void locals_stop(locals *lw)
{
    if (!lw)
        return;
    pthread_mutex_lock(&lw->mu);
    bool had_thread = lw->thread_started;
    lw->thread_started = false;
    lw->stop = true;
    pthread_cond_broadcast(&lw->cv);
    pthread_mutex_unlock(&lw->mu);
    if (had_thread)
        pthread_join(lw->thread, NULL);
    for (int i = 0; i < lw->n; i++)
        if (lw->kids[i].pid > 0)
            kill(lw->kids[i].pid, SIGINT);
    for (int waited = 0;; waited += 20) {
        bool any = false;
        for (int i = 0; i < lw->n; i++) {
            child *c = &lw->kids[i];
            if (c->pid <= 0)
                continue;
            if (waitpid(c->pid, NULL, WNOHANG) == c->pid)
                c->pid = 0;
            else
                any = true;
        }
        if (!any)
            break;
        if (waited >= LOCALS_STOP_WAIT_MS) {
            for (int i = 0; i < lw->n; i++) {
                if (lw->kids[i].pid > 0) {
                    log_warn("local worker did not stop; killing it", "pid=%d",
                             (int)lw->kids[i].pid);
                    kill(lw->kids[i].pid, SIGKILL);
                    waitpid(lw->kids[i].pid, NULL, 0);
                    lw->kids[i].pid = 0;
                }
            }
            break;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_cond_destroy(&lw->cv);
    pthread_mutex_destroy(&lw->mu);
    free(lw);
}
