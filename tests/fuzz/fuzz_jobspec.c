/* libFuzzer target for the job spec parser (gpp/jobspec.h).
 *
 * Every input is parsed; a spec that parses is serialised, the text parsed
 * again and serialised again: both texts must be equal byte for byte, and the
 * second parse must succeed.  A failed parse must leave *out NULL and a
 * non-empty error code.  Violations abort(). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/jobspec.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gpp_error err;
    gpp_jobspec *spec = NULL;

    gpp_error_clear(&err);
    int rc = gpp_jobspec_parse((const char *)data, size, &spec, &err);
    if (rc != 0) {
        if (spec != NULL || err.code[0] == '\0' || rc > 0) abort();
        return 0;
    }
    if (!spec) abort();

    char *first = gpp_jobspec_to_json(spec);
    if (!first) abort();
    (void)gpp_jobspec_stage_count(spec);

    gpp_jobspec *again = NULL;
    rc = gpp_jobspec_parse(first, strlen(first), &again, &err);
    if (rc != 0) {
        fprintf(stderr, "re-parse failed: %s (%s): %s\n%s\n", err.code, err.field, err.message, first);
        abort();
    }
    char *second = gpp_jobspec_to_json(again);
    if (!second) abort();
    if (strcmp(first, second) != 0) {
        fprintf(stderr, "round trip differs:\n%s\n%s\n", first, second);
        abort();
    }
    free(second);
    free(first);
    gpp_jobspec_free(again);
    gpp_jobspec_free(spec);
    return 0;
}
