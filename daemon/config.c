/* daemon/config.c - see config.h. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp_config.h"
#include "util.h"


void config_defaults(gppd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:8080");
    snprintf(cfg->worker_listen, sizeof cfg->worker_listen, "127.0.0.1:7070");
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./gpp-data");
#ifdef GPPD_DEFAULT_WEB_ROOT
    snprintf(cfg->web_root, sizeof cfg->web_root, "%s", GPPD_DEFAULT_WEB_ROOT);
#endif
    cfg->local_workers = 0;
    cfg->worker_grace = 60;
    cfg->upload_quota_mb = 4096;
}

const char *config_usage(void)
{
    return
        "usage: gppd [options]\n"
        "  --listen ADDR:PORT         HTTP API and dashboard (default 127.0.0.1:8080;\n"
        "                             port 0 picks a free port, logged at start)\n"
        "  --worker-listen ADDR:PORT  worker protocol (default 127.0.0.1:7070)\n"
        "  --data-dir DIR             database, artifacts, tokens (default ./gpp-data)\n"
        "  --web-root DIR             dashboard files served at /\n"
        "  --local-workers N          spawn N CPU workers as children (default 0)\n"
        "  --worker-grace SECONDS     how long a silent worker keeps its stage (default 60)\n"
        "  --upload-quota-mb N        MiB of uploaded models a user may keep (default 4096;\n"
        "                             0: no limit)\n"
        "  --config FILE              `key = value` lines with the keys above; flags win\n"
        "  --help, --version\n";
}

int config_split_addr(const char *s, char *host, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return GPP_EINVAL;
    size_t hlen = (size_t)(colon - s);
    const char *h = s;
    if (s[0] == '[') {
        if (hlen < 3 || s[hlen - 1] != ']')
            return GPP_EINVAL;
        h = s + 1;
        hlen -= 2;
    } else if (memchr(s, ':', hlen)) {
        return GPP_EINVAL;   /* bare IPv6 needs brackets */
    }
    if (hlen == 0 || hlen >= CONFIG_ADDR_MAX)
        return GPP_EINVAL;
    int64_t p;
    if (gpp__parse_i64(colon + 1, 0, 65535, &p) != 0 || colon[1] == '+' || colon[1] == '-')
        return GPP_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

/* Apply one setting; `where` names the source for messages ("--listen",
 * "gppd.conf:3"). */
static int config_set(gppd_config *cfg, const char *key, const char *val,
                      const char *where, gpp_error *err)
{
    char host[CONFIG_ADDR_MAX];
    int port;
    int64_t n;
    if (strcmp(key, "listen") == 0 || strcmp(key, "worker-listen") == 0) {
        if (strlen(val) >= CONFIG_ADDR_MAX || config_split_addr(val, host, &port) != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                                 "%s: '%s' is not ADDR:PORT (e.g. 127.0.0.1:8080)", where, val);
        char *dst = key[0] == 'l' ? cfg->listen : cfg->worker_listen;
        snprintf(dst, CONFIG_ADDR_MAX, "%s", val);
        return 0;
    }
    if (strcmp(key, "data-dir") == 0 || strcmp(key, "web-root") == 0) {
        if (val[0] == '\0' && key[0] == 'd')
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                                 "%s: the data folder must not be empty", where);
        if (strlen(val) >= PATH_MAX)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                                 "%s: path too long", where);
        char *dst = key[0] == 'd' ? cfg->data_dir : cfg->web_root;
        snprintf(dst, PATH_MAX, "%s", val);
        return 0;
    }
    if (strcmp(key, "local-workers") == 0) {
        if (gpp__parse_i64(val, 0, 256, &n) != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                                 "%s: '%s' is not a whole number in 0..256", where, val);
        cfg->local_workers = (int)n;
        return 0;
    }
    if (strcmp(key, "worker-grace") == 0) {
        if (gpp__parse_i64(val, 1, 86400, &n) != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                                 "%s: '%s' is not a number of seconds in 1..86400", where, val);
        cfg->worker_grace = (int)n;
        return 0;
    }
    if (strcmp(key, "upload-quota-mb") == 0) {
        if (gpp__parse_i64(val, 0, 1LL << 30, &n) != 0)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                                 "%s: '%s' is not a number of MiB in 0..1073741824", where, val);
        cfg->upload_quota_mb = n;
        return 0;
    }
    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", key,
                         "%s: unknown key '%s'", where, key);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* One line of a config file (NUL-terminated, no newline, writable). */
static int config_line(gppd_config *cfg, char *line, const char *where, gpp_error *err)
{
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                             "%s: expected `key = value`", where);
    *eq = '\0';
    char *key = trim(s), *val = trim(eq + 1);
    if (*key == '\0')
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                             "%s: expected `key = value` (no key before '=')", where);
    /* a value may carry a trailing comment: "8080  # http" */
    char *hash = strstr(val, " #");
    if (!hash)
        hash = strstr(val, "\t#");
    if (hash) {
        *hash = '\0';
        val = trim(val);
    }
    size_t vlen = strlen(val);
    if (vlen >= 2 && ((val[0] == '"' && val[vlen - 1] == '"') ||
                      (val[0] == '\'' && val[vlen - 1] == '\''))) {
        val[vlen - 1] = '\0';
        val++;
    }
    for (char *k = key; *k; k++)
        if (*k == '_')
            *k = '-';
    if (strcmp(key, "config") == 0)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                             "%s: a config file cannot name another config file", where);
    return config_set(cfg, key, val, where, err);
}

int config_parse_text(gppd_config *cfg, const char *text, size_t len, const char *name,
                      gpp_error *err)
{
    if (len > CONFIG_FILE_MAX)
        return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                             "%s: larger than %d bytes", name, CONFIG_FILE_MAX);
    char line[CONFIG_LINE_MAX + 1];
    size_t pos = 0;
    for (int lineno = 1; pos < len; lineno++) {
        char where[PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        if (n > CONFIG_LINE_MAX)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                                 "%s: line longer than %d bytes", where, CONFIG_LINE_MAX);
        if (memchr(text + pos, '\0', n))
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                                 "%s: a NUL byte", where);
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos += n + (nl ? 1 : 0);
        int rc = config_line(cfg, line, where, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int config_load_file(gppd_config *cfg, const char *path, gpp_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return gpp_error_set(err, GPP_EIO, "io_error", "config",
                             "cannot read config file %s: %s", path, strerror(errno));
    char *text = malloc(CONFIG_FILE_MAX + 1);
    if (!text) {
        fclose(f);
        return gpp_error_set(err, GPP_ENOMEM, "internal", "config", "out of memory");
    }
    size_t len = fread(text, 1, CONFIG_FILE_MAX + 1, f);
    int rc = 0;
    if (ferror(f))
        rc = gpp_error_set(err, GPP_EIO, "io_error", "config",
                           "cannot read config file %s: %s", path, strerror(errno));
    else
        rc = config_parse_text(cfg, text, len, path, err);
    fclose(f);
    free(text);
    return rc;
}

/* Is argv[i] the flag `name` (as "--name" or "--name=...")? On a match
 * sets *val to the value (from "=..." or argv[i+1], advancing *i). */
static int flag_match(int argc, char **argv, int *i, const char *name,
                      const char **val, gpp_error *err)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, name, n) != 0)
        return 0;
    if (a[2 + n] == '=') {
        *val = a + 3 + n;
        return 1;
    }
    if (a[2 + n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        gpp_error_set(err, GPP_EINVAL, "invalid_argument", name, "--%s needs a value", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

static const char *const value_flags[] = {
    "listen", "worker-listen", "data-dir", "web-root", "local-workers", "worker-grace",
    "upload-quota-mb", "config", NULL,
};

int config_parse_args(gppd_config *cfg, int argc, char **argv, gpp_error *err)
{
    /* pass 1: --help, --version, --config; check every flag is known */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cfg->help = true;
            continue;
        }
        if (strcmp(a, "--version") == 0) {
            cfg->version = true;
            continue;
        }
        int matched = 0;
        for (int k = 0; value_flags[k] && !matched; k++) {
            const char *val = NULL;
            int m = flag_match(argc, argv, &i, value_flags[k], &val, err);
            if (m < 0)
                return GPP_EINVAL;
            if (m == 0)
                continue;
            matched = 1;
            if (strcmp(value_flags[k], "config") == 0) {
                if (strlen(val) >= sizeof cfg->config_file || !*val)
                    return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "config",
                                         "--config needs a file name");
                snprintf(cfg->config_file, sizeof cfg->config_file, "%s", val);
            }
        }
        if (!matched)
            return gpp_error_set(err, GPP_EINVAL, "invalid_argument", "",
                                 "unknown option '%s' (see gppd --help)", a);
    }
    if (cfg->help || cfg->version)
        return 0;
    if (cfg->config_file[0]) {
        int rc = config_load_file(cfg, cfg->config_file, err);
        if (rc != 0)
            return rc;
    }
    /* pass 2: the flags, over the file */
    for (int i = 1; i < argc; i++) {
        for (int k = 0; value_flags[k]; k++) {
            const char *val = NULL;
            int m = flag_match(argc, argv, &i, value_flags[k], &val, err);
            if (m < 0)
                return GPP_EINVAL;
            if (m == 0)
                continue;
            if (strcmp(value_flags[k], "config") != 0) {
                char where[64];
                snprintf(where, sizeof where, "--%s", value_flags[k]);
                int rc = config_set(cfg, value_flags[k], val, where, err);
                if (rc != 0)
                    return rc;
            }
            break;
        }
    }
    return 0;
}
