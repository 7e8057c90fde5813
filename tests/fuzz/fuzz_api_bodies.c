/* libFuzzer target for the HTTP request bodies gppd parses (daemon/api_parse.h).
 *
 * Input layout: [selector][rest...]; selector % 5 picks
 *   0  POST /api/v1/tokens      api_parse_token_issue(rest)
 *   1  POST /api/v1/datasets    api_parse_dataset_register(rest)
 *   2  POST /api/v1/jobs        api_parse_job_submit(rest), no Idempotency-Key
 *   3  POST /api/v1/jobs        rest = KEY '\n' BODY: the key is the header
 *   4  any JSON body            api_parse_body_object(rest)
 * (job cancel/retry and worker drain take no body: gppd reads and drops it.)
 *
 * Checks (abort() on failure), for every parser:
 *   - a failure has a code, a message, an HTTP status of 400/413/422/500
 *     matching the code (400 "malformed", 413 "too_large"), and its message
 *     and field are valid UTF-8 without control characters (they go into the
 *     JSON error reply);
 *   - a success gives values within the documented rules: token names and
 *     roles, data set names and absolute paths, a submit whose stage chain
 *     has gpp_jobspec_stage_count entries, whose sha256 is that of the
 *     canonical text and whose canonical text parses again to itself;
 *   - a body object prints, parses and prints again to the same text.
 * Bodies are copied to a heap buffer of exactly their size (no NUL after
 * them, as in the daemon's upload buffer the length is what counts) so a
 * read past the end is caught by ASan. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_parse.h"
#include "gpp/sha256.h"

#include "fuzz_check.h"

/* Valid UTF-8 without C0 controls or DEL. */
static int clean_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t len;
        unsigned cp;
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return 0;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        p += len;
    }
    return 1;
}

static void check_error(int rc, const gpp_error *e)
{
    CHECK(rc < 0);
    CHECK(e->code[0] != '\0');
    CHECK(e->message[0] != '\0');
    unsigned status = api_parse_status(rc);
    CHECK(status == 400 || status == 413 || status == 422 || status == 500);
    if (status == 400)
        CHECK(strcmp(e->code, "malformed") == 0);
    if (status == 413)
        CHECK(strcmp(e->code, "too_large") == 0);
    if (!clean_utf8(e->message) || !clean_utf8(e->field)) {
        fprintf(stderr, "error text not clean UTF-8: field '%s' message '%s'\n", e->field,
                e->message);
        abort();
    }
}

static int name_chars(const char *s, int lower_only)
{
    size_t n = strlen(s);
    if (n == 0 || n > STORE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                 c == '-' || (!lower_only && c >= 'A' && c <= 'Z');
        if (!ok)
            return 0;
    }
    return 1;
}

static void fuzz_token(const char *body, size_t len)
{
    api_token_req t;
    gpp_error e = {0};
    int rc = api_parse_token_issue(body, len, &t, &e);
    if (rc != 0) {
        check_error(rc, &e);
        return;
    }
    CHECK(name_chars(t.name, 0));
    CHECK(strcmp(t.role, "user") == 0 || strcmp(t.role, "admin") == 0 ||
          strcmp(t.role, "worker") == 0);
}

static void fuzz_dataset(const char *body, size_t len)
{
    api_dataset_req d;
    gpp_error e = {0};
    int rc = api_parse_dataset_register(body, len, &d, &e);
    if (rc != 0) {
        check_error(rc, &e);
        CHECK(d.format == NULL && d.path == NULL);
        return;
    }
    CHECK(name_chars(d.name, 1) && d.name[0] != '.' && d.name[0] != '_' && d.name[0] != '-');
    CHECK(d.format != NULL && d.path != NULL && d.path[0] == '/');
    api_dataset_req_clear(&d);
    CHECK(d.format == NULL && d.path == NULL);
    api_dataset_req_clear(&d);
}

static void fuzz_submit(const char *body, size_t len, const char *key)
{
    api_job_submit s;
    gpp_error e = {0};
    int rc = api_parse_job_submit(body, len, key, &s, &e);
    if (rc != 0) {
        check_error(rc, &e);
        CHECK(s.spec == NULL && s.canon == NULL);
        return;
    }
    CHECK(s.spec != NULL && s.canon != NULL);
    CHECK(s.n_stages == gpp_jobspec_stage_count(s.spec));
    CHECK(s.n_stages >= 0 && s.n_stages <= API_PARSE_CHAIN_MAX);
    for (int i = 0; i < s.n_stages; i++)
        CHECK(s.chain[i].kind != NULL);
    uint8_t d[32];
    gpp_sha256(s.canon, strlen(s.canon), d);
    CHECK(memcmp(d, s.spec_sha256, 32) == 0);
    CHECK(s.idem_key == key);
    if (key) {
        size_t kl = strlen(key);
        CHECK(kl >= 1 && kl <= API_PARSE_IDEM_KEY_MAX);
    }
    CHECK(strcmp(s.device, "any") == 0 || strcmp(s.device, "cpu") == 0 ||
          strcmp(s.device, "gpu") == 0);
    CHECK(s.dataset && s.dataset[0] && s.model[0] && s.first_reason);
    /* the canonical text is a fixed point: submitting it again stores the same */
    api_job_submit again;
    rc = api_parse_job_submit(s.canon, strlen(s.canon), NULL, &again, &e);
    if (rc != 0) {
        fprintf(stderr, "canonical spec refused: %s (%s): %s\n", e.code, e.field, e.message);
        abort();
    }
    CHECK(strcmp(again.canon, s.canon) == 0);
    CHECK(again.n_stages == s.n_stages && strcmp(again.model, s.model) == 0);
    api_job_submit_clear(&again);
    api_job_submit_clear(&s);
    CHECK(s.spec == NULL && s.canon == NULL);
}

static void fuzz_object(const char *body, size_t len)
{
    cJSON *o = NULL;
    gpp_error e = {0};
    int rc = api_parse_body_object(body, len, &o, &e);
    if (rc != 0) {
        check_error(rc, &e);
        CHECK(rc == GPP_EFORMAT && o == NULL);
        return;
    }
    CHECK(cJSON_IsObject(o));
    char *text = cJSON_PrintUnformatted(o);
    CHECK(text != NULL);
    cJSON *back = NULL;
    rc = api_parse_body_object(text, strlen(text), &back, &e);
    if (rc != 0) {
        fprintf(stderr, "printed object refused: %s\n%s\n", e.message, text);
        abort();
    }
    char *again = cJSON_PrintUnformatted(back);
    CHECK(again != NULL);
    if (strcmp(text, again) != 0) {
        fprintf(stderr, "print/parse/print differs:\n%s\n%s\n", text, again);
        abort();
    }
    free(again);
    cJSON_Delete(back);
    free(text);
    cJSON_Delete(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0] % 5;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    char key[512];
    const char *keyp = NULL;
    if (sel == 3) {
        const uint8_t *nl = memchr(rest, '\n', n);
        size_t kl = nl ? (size_t)(nl - rest) : n;
        if (kl >= sizeof key)
            kl = sizeof key - 1;
        memcpy(key, rest, kl);
        key[kl] = '\0';          /* a header value ends at its first NUL */
        keyp = key;
        size_t skip = nl ? (size_t)(nl - rest) + 1 : n;
        rest += skip;
        n -= skip;
    }
    char *body = malloc(n ? n : 1);
    if (!body)
        return 0;
    memcpy(body, rest, n);
    switch (sel) {
    case 0: fuzz_token(body, n); break;
    case 1: fuzz_dataset(body, n); break;
    case 2:
    case 3: fuzz_submit(body, n, keyp); break;
    default: fuzz_object(body, n); break;
    }
    free(body);
    return 0;
}
