/* libFuzzer target for gppd's config file (daemon/config.h,
 * config_parse_text: what config_load_file does with the file's bytes).
 *
 * Checks (abort() on failure):
 *   - a success leaves a configuration gppd can start from: listen and
 *     worker-listen split into ADDR:PORT, a non-empty data folder, 0..256
 *     local workers, a grace of 1..86400 s, every string NUL-terminated in
 *     its buffer;
 *   - a failure is GPP_EINVAL with a code, a field and a message that starts
 *     with "NAME:LINE: " (LINE >= 1) or, for a file over the size limit,
 *     "NAME: ";
 *   - parsing is deterministic: the same text over fresh defaults gives the
 *     same result, byte for byte.
 * The text lives in a heap buffer of exactly its size (no NUL after it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#include "fuzz_check.h"

#define NAME "fuzz.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    gppd_config c, c2;
    gpp_error e, e2;
    config_defaults(&c);
    config_defaults(&c2);
    memset(&e, 0, sizeof e);
    memset(&e2, 0, sizeof e2);
    int rc = config_parse_text(&c, text, size, NAME, &e);
    int rc2 = config_parse_text(&c2, text, size, NAME, &e2);
    CHECK(rc == rc2);
    CHECK(memcmp(&c, &c2, sizeof c) == 0);
    CHECK(strcmp(e.code, e2.code) == 0 && strcmp(e.field, e2.field) == 0 &&
          strcmp(e.message, e2.message) == 0);
    if (rc == 0) {
        char host[CONFIG_ADDR_MAX];
        int port = -1;
        CHECK(memchr(c.listen, '\0', sizeof c.listen) != NULL);
        CHECK(memchr(c.worker_listen, '\0', sizeof c.worker_listen) != NULL);
        CHECK(memchr(c.data_dir, '\0', sizeof c.data_dir) != NULL);
        CHECK(memchr(c.web_root, '\0', sizeof c.web_root) != NULL);
        CHECK(config_split_addr(c.listen, host, &port) == 0 && port >= 0 && port <= 65535);
        CHECK(config_split_addr(c.worker_listen, host, &port) == 0);
        CHECK(c.data_dir[0] != '\0');
        CHECK(c.local_workers >= 0 && c.local_workers <= 256);
        CHECK(c.worker_grace >= 1 && c.worker_grace <= 86400);
        CHECK(!c.help && !c.version && c.config_file[0] == '\0');
    } else {
        CHECK(rc == GPP_EINVAL);
        CHECK(e.code[0] && e.field[0] && e.message[0]);
        CHECK(strncmp(e.message, NAME ":", sizeof NAME) == 0);
        const char *p = e.message + sizeof NAME;
        if (*p == ' ') {
            CHECK(size > CONFIG_FILE_MAX);
        } else {
            char *end = NULL;
            long line = strtol(p, &end, 10);
            CHECK(line >= 1 && end && end[0] == ':' && end[1] == ' ');
        }
    }
    free(text);
    return 0;
}
