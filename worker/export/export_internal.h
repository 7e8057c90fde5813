/* Shared between onnx.c and export_main.c (not public API). */
#ifndef GPP_EXPORT_INTERNAL_H
#define GPP_EXPORT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/ckpt.h"
#include "gpp/error.h"

/* What an export produced, for the subcommand's summary line. */
typedef struct gpp__onnx_stats {
    size_t nodes;          /* graph nodes */
    size_t initializers;   /* graph initializers (parameters and constants) */
    long long params;      /* weights + biases (bn: gamma + beta) */
    int C, H, W;           /* input shape of one sample */
    int classes;           /* logits per sample */
    int normalized;        /* 1 when the graph starts with the normalisation */
} gpp__onnx_stats;

/* gpp_onnx_export_buffer that also fills *st (may be NULL). */
int gpp__onnx_build(const gpp_ckpt *ck, uint8_t **buf, size_t *len, gpp__onnx_stats *st,
                    gpp_error *err);

/* Write `len` bytes to `path` atomically ("PATH.tmp.<pid>", fsync, rename,
 * fsync the directory); nothing is left behind on failure.  0 or GPP_EIO. */
int gpp__onnx_write_file(const char *path, const uint8_t *buf, size_t len, gpp_error *err);

#endif
