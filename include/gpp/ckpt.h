/* gpp/ckpt.h - the checkpoint format ".gppm": the network description as
 * JSON plus named float32 tensors (parameters, batch-norm running stats and,
 * optionally, optimiser state), protected by a CRC-32.  Every stage of a job
 * reads one checkpoint and writes one; the daemon stores them as artifacts;
 * deploy/python/gppm.py reads and writes the same bytes from Python.
 *
 * Byte layout, version 1.  All integers little-endian, all offsets absolute
 * (from the first byte of the file).
 *
 *   offset  size            field
 *   ------  --------------  ----------------------------------------------------
 *        0  8               magic "GPPM\r\n\x1a\n"  (47 50 50 4d 0d 0a 1a 0a)
 *        8  u32             version = 1
 *       12  u32             flags: bit 0 = optimiser state present; other bits 0
 *       16  u32             json_len (1 .. 16 MiB)
 *       20  u32             n_tensors (0 .. 65536)
 *       24  u64             data_offset (64-byte aligned, >= end of the table)
 *       32  json_len        the JSON document, UTF-8, no NUL (see below)
 *   32+json_len             the tensor table, n_tensors entries, packed:
 *                 u16       name_len (1 .. 255)
 *                 name_len  name: printable ASCII (0x20..0x7e), unique
 *                 u8        dtype: 1 = float32 (nothing else is accepted)
 *                 u8        ndim (0 .. 8; 0 is a scalar of one element)
 *                 u64[ndim] dims, each >= 1
 *                 u64       offset of the data (64-byte aligned, >= data_offset)
 *                 u64       nbytes = 4 * prod(dims)
 *                 ...       zero padding up to data_offset
 *   data_offset             the data region: each tensor's float32 values,
 *                           row-major (C order), little-endian, in table order,
 *                           non-overlapping, each at a 64-byte aligned offset
 *   file_len-8  u32         CRC-32 (zlib crc32, = Python's zlib.crc32) of
 *                           bytes [0, file_len-8)
 *   file_len-4  4           end marker "MPPG"
 *
 * Writers (this file's and gppm.save) lay tensors out back to back, each at
 * the next 64-byte boundary after the previous one (the first at data_offset,
 * which is the first 64-byte boundary after the table), pad with zeros, and
 * put the trailer right after the last tensor's data (or at data_offset when
 * there is none).  Readers accept any gaps that keep the rules above, so a
 * writer may choose a coarser alignment.  Limits: JSON <= 16 MiB, <= 65536
 * tensors, file <= 16 GiB.
 *
 * The JSON document is an object
 *   {"format": "gppm",
 *    "network": {...},   the network description of gpp/netdesc.h
 *    "meta":    {...},   free-form: stage, job, accuracies, ...
 *    "state":   {...}}   free-form: step, epoch, data position, rng, ...
 * The reader checks only that it is strict UTF-8 JSON (no control bytes
 * outside \t \n \r, nothing after the value) whose root is an object with an
 * object member "network"; the rest is the caller's business.
 *
 * Tensor names: parameters follow gpp/netdesc.h ("conv1.weight",
 * "bn1.running_mean"); optimiser state is named "optim/<parameter name>"
 * (e.g. the momentum buffer of conv1.weight is "optim/conv1.weight"), and
 * flag bit 0 is set exactly when at least one such tensor is present (the
 * reader refuses a file where the two disagree).
 *
 * Reading checks, in order: the magic (on as many bytes as there are), the
 * version (GPP_EVERSION), the header's bounds, the end marker, the CRC
 * (GPP_ECHECKSUM), the JSON, then every table entry (GPP_EFORMAT for the
 * rest; a file over 16 GiB is GPP_ETOOBIG).  A reader never reads outside
 * the bytes it was given; each message names what is wrong, e.g.
 * "checkpoint truncated: tensor 'fc1.weight' data ends at 1234 but file is
 * 1000 bytes".
 *
 * Hosts: the data is stored little-endian and handed out in place, so the
 * implementation refuses to compile on a big-endian host (#error in ckpt.c).
 */
#ifndef GPP_CKPT_H
#define GPP_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/error.h"

#define GPP_CKPT_MAGIC "GPPM\r\n\x1a\n"  /* 8 bytes, no NUL */
#define GPP_CKPT_END_MARKER "MPPG"       /* 4 bytes, no NUL */
#define GPP_CKPT_VERSION 1
#define GPP_CKPT_HEADER_SIZE 32
#define GPP_CKPT_TRAILER_SIZE 8
#define GPP_CKPT_ALIGN 64
#define GPP_CKPT_FLAG_OPTIM 0x1u
#define GPP_CKPT_DTYPE_F32 1
#define GPP_CKPT_MAX_NDIM 8
#define GPP_CKPT_NAME_MAX 255
#define GPP_CKPT_MAX_JSON ((size_t)16 << 20)
#define GPP_CKPT_MAX_TENSORS 65536
#define GPP_CKPT_MAX_FILE ((uint64_t)16 << 30)
#define GPP_CKPT_OPTIM_PREFIX "optim/"

/* One tensor of a checkpoint as the reader hands it out. */
typedef struct gpp_tensor_view {
    const char *name;      /* NUL-terminated, owned by the checkpoint */
    int ndim;              /* 0..8; 0 is a scalar (count 1) */
    int64_t dims[GPP_CKPT_MAX_NDIM]; /* dims[0..ndim-1], each >= 1; the rest 0 */
    const float *data;     /* count floats, row-major, 64-byte aligned, owned by the checkpoint */
    size_t count;          /* prod(dims) */
} gpp_tensor_view;

/* ---- writing --------------------------------------------------------- */

typedef struct gpp_ckpt_writer gpp_ckpt_writer;

/* Start a checkpoint whose JSON document is `json` (copied).  The JSON is
 * checked when it is written.  Returns NULL when json is NULL or out of
 * memory.  Free with gpp_ckpt_writer_free. */
gpp_ckpt_writer *gpp_ckpt_writer_new(const char *json);

/* Add a float32 tensor.  `name` is copied; `dims` has `ndim` (0..8) entries,
 * each >= 1 (ignored when ndim is 0); `data` holds prod(dims) floats and is
 * only referenced: it must stay valid and unchanged until the last write
 * call.  Returns 0, GPP_EINVAL (bad name: empty, longer than 255, not
 * printable ASCII, or a duplicate; bad ndim or dim; NULL data) or
 * GPP_ETOOBIG (more than 65536 tensors, or a tensor over 16 GiB), or
 * GPP_ENOMEM; *err says which. */
int gpp_ckpt_writer_add(gpp_ckpt_writer *w, const char *name, int ndim,
                        const int64_t *dims, const float *data, gpp_error *err);

/* Write the checkpoint to `path` atomically: to "PATH.tmp.<pid>", fsync,
 * rename over `path`, fsync the directory.  On failure nothing is left
 * behind (the temporary file is removed; an existing `path` is untouched),
 * except when only the final directory fsync fails: then the new file is
 * in place but its durability is unconfirmed (GPP_EIO all the same).
 * Not for two threads of one process writing the same path at once.
 * Returns 0, GPP_EINVAL (JSON not an object with an object "network", or
 * not strict UTF-8 JSON), GPP_ETOOBIG (JSON over 16 MiB, file over 16 GiB)
 * or GPP_EIO (errno text in *err). */
int gpp_ckpt_writer_write_file(gpp_ckpt_writer *w, const char *path, gpp_error *err);

/* Write the checkpoint into a new buffer: *buf (free with free()) holds
 * *len bytes.  Same checks and codes as gpp_ckpt_writer_write_file, plus
 * GPP_ENOMEM; *buf is NULL and *len 0 on failure. */
int gpp_ckpt_writer_write_buffer(gpp_ckpt_writer *w, uint8_t **buf, size_t *len,
                                 gpp_error *err);

/* Free a writer (NULL is fine).  Tensor data is not the writer's. */
void gpp_ckpt_writer_free(gpp_ckpt_writer *w);

/* ---- reading --------------------------------------------------------- */

typedef struct gpp_ckpt gpp_ckpt;

/* Read and check the checkpoint at `path` (see the checks above).  On
 * success *out is a new checkpoint (free with gpp_ckpt_free); on failure
 * *out is NULL and the return is GPP_ENOTFOUND (no such file), GPP_EIO,
 * GPP_ETOOBIG (over 16 GiB), GPP_ENOMEM, GPP_EFORMAT, GPP_EVERSION or
 * GPP_ECHECKSUM with *err naming what is wrong. */
int gpp_ckpt_read_file(const char *path, gpp_ckpt **out, gpp_error *err);

/* Only the JSON document of the checkpoint at `path` (a NUL-terminated copy
 * in *json, free() it): the header's magic, version and JSON bounds are
 * checked, the tensors and the CRC are not -- for a quick look at a file
 * already checked once (what network a stored checkpoint holds).  0, or
 * GPP_ENOTFOUND, GPP_EIO, GPP_ENOMEM, GPP_EFORMAT, GPP_EVERSION. */
int gpp_ckpt_read_json(const char *path, char **json, gpp_error *err);

/* As gpp_ckpt_read_file for `len` bytes at `buf` (copied; the caller keeps
 * `buf`).  buf may be NULL when len is 0. */
int gpp_ckpt_read_buffer(const uint8_t *buf, size_t len, gpp_ckpt **out,
                         gpp_error *err);

/* The JSON document, NUL-terminated, exactly as stored; owned by `c`. */
const char *gpp_ckpt_json(const gpp_ckpt *c);

/* Number of tensors. */
size_t gpp_ckpt_tensor_count(const gpp_ckpt *c);

/* Tensor `i` in file order (0 <= i < count), or NULL when out of range.
 * The view lives as long as `c`. */
const gpp_tensor_view *gpp_ckpt_tensor(const gpp_ckpt *c, size_t i);

/* The tensor called `name`, or NULL (O(log n)). */
const gpp_tensor_view *gpp_ckpt_find(const gpp_ckpt *c, const char *name);

/* 1 when the checkpoint holds optimiser state ("optim/..." tensors, flag
 * bit 0), else 0. */
int gpp_ckpt_has_optim(const gpp_ckpt *c);

/* Free a checkpoint and every view into it (NULL is fine). */
void gpp_ckpt_free(gpp_ckpt *c);

#endif
