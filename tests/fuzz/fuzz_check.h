/* What every fuzz target shares: libFuzzer's entry point (also called by
 * replay_main.c) and CHECK, an assertion that stays on in release builds
 * and aborts so libFuzzer records the input. */
#ifndef GPP_FUZZ_CHECK_H
#define GPP_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                             \
        }                                                                        \
    } while (0)

#endif
