/* daemon/gppd.c - see gppd.h. */
#include "gppd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "datasets.h"
#include "link.h"
#include "locals.h"
#include "log.h"
#include "tokens.h"
#include "util.h"

/* Make sure a `role` token exists: import the file if the database lacks
 * it (a crash between writing the file and committing), create both when
 * there is no active token of the role at all. */
static int bootstrap_token(gppd *d, const char *role, const char *path, gpp_error *err)
{
    char text[TOKEN_TEXT_LEN + 1], q[PATH_MAX + 8];
    uint8_t hash[32];
    log_quote(path, q, sizeof q);
    int rc = token_read_file(path, text);
    if (rc == 0) {
        if (strcmp(token_check(text, strlen(text)), role) != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "", "%s holds a %s token,"
                                 " not a %s token", path, token_check(text, strlen(text)), role);
        char prefix[TOKEN_PREFIX_LEN + 1];
        memcpy(prefix, text, TOKEN_PREFIX_LEN);
        prefix[TOKEN_PREFIX_LEN] = '\0';
        token_hash(text, strlen(text), hash);
        memset(text, 0, sizeof text);
        store_token t;
        gpp_error e2 = {0};
        rc = store_token_by_hash(d->store, hash, &t, &e2);
        if (rc == 0) {
            if (t.revoked_at)
                log_warn("token file holds a revoked token", "role=%s file=%s", role, q);
            return 0;
        }
        if (rc != GPP_ENOTFOUND)
            return gpp_error_set(err, rc, e2.code, "", "%s", e2.message);
        rc = store_token_insert(d->store, role, role, hash, prefix, 0, NULL, err);
        if (rc == 0)
            log_info("imported token", "role=%s file=%s", role, q);
        return rc;
    }
    if (rc == GPP_EFORMAT)
        return gpp_error_set(err, rc, "invalid_argument", "", "%s does not hold a gppd token;"
                             " remove it to have a new one created", path);
    if (rc != GPP_ENOTFOUND)
        return gpp_error_set(err, rc, "io_error", "", "cannot read %s: %s", path, strerror(errno));
    int64_t active = store_token_count(d->store, role, NULL, true, err);
    if (active < 0)
        return (int)active;
    if (active > 0) {
        log_warn("token file missing; existing tokens stay valid", "role=%s file=%s", role, q);
        return 0;
    }
    rc = token_generate(role, text);
    if (rc != 0)
        return gpp_error_set(err, rc, "internal", "", "cannot draw random bytes for a token");
    /* the file first: if we crash before the commit, the next start imports it */
    rc = token_write_file(path, text);
    if (rc != 0) {
        memset(text, 0, sizeof text);
        return gpp_error_set(err, rc, "io_error", "", "cannot write %s: %s", path,
                             strerror(errno));
    }
    char prefix[TOKEN_PREFIX_LEN + 1];
    memcpy(prefix, text, TOKEN_PREFIX_LEN);
    prefix[TOKEN_PREFIX_LEN] = '\0';
    token_hash(text, strlen(text), hash);
    memset(text, 0, sizeof text);
    rc = store_token_insert(d->store, role, role, hash, prefix, 0, NULL, err);
    if (rc == 0)
        log_info("created token", "role=%s file=%s", role, q);
    return rc;
}

static void register_builtin_datasets(gppd *d)
{
    struct stat st;
    if (stat(DATASET_FASHION_MNIST_DIR, &st) != 0 || !S_ISDIR(st.st_mode))
        return;
    store_dataset ds;
    if (store_dataset_get(d->store, "fashion-mnist", &ds, NULL) == 0) {
        store_dataset_clear(&ds);
        return;
    }
    char *info = NULL;
    gpp_error err = {0};
    char q[600];
    if (dataset_inspect("idx", DATASET_FASHION_MNIST_DIR, &info, &err) != 0 ||
        store_dataset_insert(d->store, "fashion-mnist", "idx", DATASET_FASHION_MNIST_DIR, info,
                             "gppd", &err) != 0) {
        log_warn("fashion-mnist not registered", "error=%s",
                 log_quote(err.message, q, sizeof q));
    } else {
        log_info("registered data set", "name=fashion-mnist path=%s", DATASET_FASHION_MNIST_DIR);
    }
    free(info);
}

int gppd_open(gppd **out, const gppd_config *cfg, gpp_error *err)
{
    *out = NULL;
    gppd *d = calloc(1, sizeof *d);
    if (!d)
        return gpp_error_set(err, GPP_ENOMEM, "internal", "", "out of memory");
    d->cfg = *cfg;
    d->lock_fd = -1;
    d->started_at = gpp__now_ms();
    const char *dir = cfg->data_dir;
    char path[PATH_MAX], q[PATH_MAX + 8];
    int rc;
    if (gpp__mkdir_p(dir, 0700) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "data-dir",
                           "cannot create the data folder %s: %s", dir, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (stat(dir, &st) == 0 && (st.st_mode & 077))
        log_warn("data folder is readable by others; chmod 700 it", "dir=%s",
                 log_quote(dir, q, sizeof q));
    if (snprintf(path, sizeof path, "%s/gppd.lock", dir) >= (int)sizeof path ||
        snprintf(d->admin_token_path, sizeof d->admin_token_path, "%s/admin.token", dir) >=
            (int)sizeof d->admin_token_path ||
        snprintf(d->worker_token_path, sizeof d->worker_token_path, "%s/worker.token", dir) >=
            (int)sizeof d->worker_token_path) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data-dir", "data folder path too long");
        goto fail;
    }
    d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "data-dir", "cannot open %s: %s", path,
                           strerror(errno));
        goto fail;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = gpp_error_set(err, GPP_EIO, "io_error", "data-dir",
                           "another gppd is using the data folder %s", dir);
        goto fail;
    }
    char pid[32];
    int plen = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(d->lock_fd, 0) != 0 || pwrite(d->lock_fd, pid, (size_t)plen, 0) != plen)
        log_warn("cannot write the pid into gppd.lock", "dir=%s", log_quote(dir, q, sizeof q));

    if ((size_t)snprintf(path, sizeof path, "%s/gppd.db", dir) >= sizeof path) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data-dir", "data folder path too long");
        goto fail;
    }
    rc = store_open(&d->store, path, err);
    if (rc != 0)
        goto fail;
    if ((size_t)snprintf(path, sizeof path, "%s/artifacts", dir) >= sizeof path) {
        rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "data-dir", "data folder path too long");
        goto fail;
    }
    rc = artifacts_open(&d->artifacts, path, err);
    if (rc != 0)
        goto fail;
    rc = bootstrap_token(d, "admin", d->admin_token_path, err);
    if (rc == 0)
        rc = bootstrap_token(d, "worker", d->worker_token_path, err);
    if (rc != 0)
        goto fail;
    register_builtin_datasets(d);

    if (cfg->web_root[0]) {
        if (!realpath(cfg->web_root, d->web_root)) {
            d->web_root[0] = '\0';
            log_warn("web root not found; the dashboard is not served", "web_root=%s",
                     log_quote(cfg->web_root, q, sizeof q));
        } else if (stat(d->web_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
            rc = gpp_error_set(err, GPP_EINVAL, "invalid_argument", "web-root",
                               "--web-root %s is not a folder", cfg->web_root);
            goto fail;
        }
    }
    log_info("opened", "data_dir=%s schema=%d admin_token=%s worker_token=%s",
             log_quote(dir, q, sizeof q), store_schema_version(d->store), d->admin_token_path,
             d->worker_token_path);
    *out = d;
    return 0;
fail:
    gppd_close(d);
    return rc;
}

int gppd_start(gppd *d, gpp_error *err)
{
    int rc = link_start(&d->link, d, err);
    if (rc != 0)
        return rc;
    rc = api_start(&d->api, d, err);
    if (rc != 0) {
        link_stop(d->link);
        d->link = NULL;
        return rc;
    }
    char host[CONFIG_ADDR_MAX];
    int port;
    config_split_addr(d->cfg.listen, host, &port);
    bool v6 = strchr(host, ':') != NULL;
    log_info("listening", "http=%s%s%s:%u web_root=%s", v6 ? "[" : "", host, v6 ? "]" : "",
             (unsigned)api_port(d->api), d->web_root[0] ? d->web_root : "-");
    if (d->cfg.local_workers > 0) {
        char addr[CONFIG_ADDR_MAX + 8];
        link_connect_addr(d->link, addr, sizeof addr);
        rc = locals_start(&d->locals, d, d->cfg.local_workers, addr, err);
        if (rc != 0) {
            gppd_stop(d);
            return rc;
        }
    }
    return 0;
}

uint16_t gppd_http_port(const gppd *d)
{
    return d->api ? api_port(d->api) : 0;
}

void gppd_stop(gppd *d)
{
    if (!d)
        return;
    locals_stop(d->locals);
    d->locals = NULL;
    if (d->api) {
        api_stop(d->api);
        d->api = NULL;
    }
    link_stop(d->link);
    d->link = NULL;
}

void gppd_close(gppd *d)
{
    if (!d)
        return;
    gppd_stop(d);
    artifacts_close(d->artifacts);
    store_close(d->store);
    if (d->lock_fd >= 0)
        close(d->lock_fd);     /* releases the flock */
    free(d);
}
