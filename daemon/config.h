/* daemon/config.h - gppd's settings: command-line flags and the --config
 * file (same keys as the flags, `key = value` lines, # comments; flags win). */
#ifndef GPPD_CONFIG_H
#define GPPD_CONFIG_H

#include <limits.h>
#include <stdbool.h>

#include "gpp/error.h"

#define CONFIG_ADDR_MAX 256

typedef struct gppd_config {
    char listen[CONFIG_ADDR_MAX];         /* HTTP ADDR:PORT [127.0.0.1:8080] */
    char worker_listen[CONFIG_ADDR_MAX];  /* worker link ADDR:PORT [127.0.0.1:7070] */
    char data_dir[PATH_MAX];              /* [./gpp-data] */
    char web_root[PATH_MAX];              /* static files; "" = none */
    int local_workers;                    /* CPU workers spawned as children [0] */
    int worker_grace;                     /* seconds a silent worker keeps its stage [60] */
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
 * web-root, local-workers, worker-grace; `_` may stand for `-`).
 * Returns 0, or GPP_EINVAL / GPP_EIO with *err naming FILE:LINE. */
int config_load_file(gppd_config *cfg, const char *path, gpp_error *err);

/* Split "ADDR:PORT" ("[::1]:8080" for IPv6) into host and port; port 0..65535.
 * Returns 0 or GPP_EINVAL. host must hold CONFIG_ADDR_MAX bytes. */
int config_split_addr(const char *s, char *host, int *port);

/* The --help text. */
const char *config_usage(void);

#endif
