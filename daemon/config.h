/* daemon/config.h - gppd's settings: command-line flags and the --config
 * file (same keys as the flags, `key = value` lines, # comments; flags win). */
#ifndef GPPD_CONFIG_H
#define GPPD_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

#define CONFIG_ADDR_MAX 256

typedef struct gppd_config {
    char listen[CONFIG_ADDR_MAX];         /* HTTP ADDR:PORT [127.0.0.1:8080] */
    char worker_listen[CONFIG_ADDR_MAX];  /* worker link ADDR:PORT [127.0.0.1:7070] */
    char data_dir[PATH_MAX];              /* [./gpp-data] */
    char web_root[PATH_MAX];              /* static files; "" = none */
    int local_workers;                    /* CPU workers spawned as children [0] */
    int worker_grace;                     /* seconds a silent worker keeps its stage [60] */
    int64_t upload_quota_mb;              /* MiB of uploaded models per user; 0 = none [4096] */
    char config_file[PATH_MAX];           /* --config FILE, "" = none */
    bool help;                            /* --help given */
    bool version;                         /* --version given */
} gppd_config;

/* Fill *cfg with the defaults. */
void config_defaults(gppd_config *cfg);

/* Parse argv (flags `--key VALUE` or `--key=VALUE`) over the defaults:
 * finds --config first and reads that file, then applies the flags so they
 * win. Returns 0, or GPP_EINVAL / GPP_EIO with one clear sentence in *err
 * (unknown flag, missing value, bad number, unreadable file, unknown key in
 * the file with its line number). */
int config_parse_args(gppd_config *cfg, int argc, char **argv, gpp_error *err);

/* Read a config file into *cfg (keys: listen, worker-listen, data-dir,
 * web-root, local-workers, worker-grace, upload-quota-mb; `_` may stand for `-`).
 * Returns 0, or GPP_EINVAL / GPP_EIO with *err naming FILE:LINE (a file
 * over CONFIG_FILE_MAX bytes is refused whole; see config_parse_text). */
int config_load_file(gppd_config *cfg, const char *path, gpp_error *err);

#define CONFIG_LINE_MAX 4096          /* bytes per line of a config file */
#define CONFIG_FILE_MAX (1024 * 1024) /* bytes of a config file */

/* Apply config file text (len bytes, no NUL needed) over *cfg, `name` (the
 * file's path) naming it in messages as "NAME:LINE: ...".  Lines end at \n
 * (a \r before it is ignored); blank lines and # comments are skipped; a
 * value may end with " # comment" and may be quoted ("..." or '...').
 * Returns 0, or GPP_EINVAL with *err (field "config" for a line that is not
 * `key = value`, over CONFIG_LINE_MAX, holds a NUL, names `config`, or text
 * over CONFIG_FILE_MAX; the key for an unknown key or a bad value).
 * Settings of lines before a bad one stay applied. */
int config_parse_text(gppd_config *cfg, const char *text, size_t len, const char *name,
                      gpp_error *err);

/* Split "ADDR:PORT" ("[::1]:8080" for IPv6) into host and port; port 0..65535.
 * Returns 0 or GPP_EINVAL. host must hold CONFIG_ADDR_MAX bytes. */
int config_split_addr(const char *s, char *host, int *port);

/* The --help text. */
const char *config_usage(void);

#endif
