/* libFuzzer target for the worker protocol (gpp/proto.h).
 *
 * Input layout: [mode][seed][stream bytes...]
 *   mode bits 0-1  chunk scale: pieces of 1, 1..16, 1..256 or 1..N bytes
 *   mode bit 2     decoder maximum 256 bytes instead of GPP_FRAME_MAX
 *   seed           seeds the generator that draws the piece sizes
 * so the chunking comes from the input itself.
 *
 * Checks (abort() on failure):
 *   - the chunked decode yields the same frames, the same final error and the
 *     same stream offset as one feed of the whole stream;
 *   - after "need more" the decoder has consumed everything it was fed; after
 *     an error, feeding more is refused with the same error;
 *   - every frame that parses re-encodes (gpp_msg_encode; only "too big" may
 *     refuse it) into one frame that decodes and parses to an equal message
 *     (gpp_msg_equal).
 * Each piece lives in its own heap copy, freed once drained, so a decoder
 * that kept a pointer into old input is caught by ASan. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpp/proto.h"
#include "gpp/sha256.h"

#include "fuzz_check.h"

typedef struct result {
    gpp_sha256_ctx frames;   /* hash over (type, len, payload) of every frame */
    int nframes;
    int rc;                  /* 0, or the decoder's error */
    uint64_t offset;
} result;

static uint64_t next_rand(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Parse a frame; when it is a valid message, re-encode it and check the
 * round trip gives an equal message. */
static void check_message(const gpp_frame *f)
{
    gpp_msg m, back;
    gpp_error err;
    if (gpp_msg_parse(f, &m, &err) != 0) return;
    CHECK(m.type == (gpp_msg_type)f->type);
    gpp_buf out = {0};
    int rc = gpp_msg_encode(&out, &m, &err);
    if (rc == GPP_ETOOBIG) {   /* canonical form over the maximum: allowed */
        gpp_msg_free(&m);
        gpp_buf_free(&out);
        return;
    }
    if (rc != 0) {
        fprintf(stderr, "fuzz_proto: a parsed %s does not re-encode: %s\n",
                gpp_msg_type_name(f->type), err.message);
        abort();
    }
    gpp_decoder d;
    gpp_decoder_init(&d, 0);
    gpp_frame g;
    CHECK(gpp_decoder_feed(&d, out.data, out.len, &err) == 0);
    CHECK(gpp_decoder_next(&d, &g, &err) == 1);
    CHECK(g.type == f->type);
    CHECK(gpp_msg_parse(&g, &back, &err) == 0);
    if (!gpp_msg_equal(&m, &back)) {
        fprintf(stderr, "fuzz_proto: %s differs after re-encoding\n", gpp_msg_type_name(f->type));
        abort();
    }
    CHECK(gpp_decoder_next(&d, &g, &err) == 0);
    CHECK(gpp_decoder_offset(&d) == out.len);
    gpp_msg_free(&back);
    gpp_decoder_free(&d);
    gpp_buf_free(&out);
    gpp_msg_free(&m);
}

static void note_frame(result *r, const gpp_frame *f)
{
    uint8_t hdr[9];
    uint64_t len = f->len;
    hdr[0] = (uint8_t)f->type;
    for (int i = 0; i < 8; i++) hdr[1 + i] = (uint8_t)(len >> (56 - 8 * i));
    gpp_sha256_update(&r->frames, hdr, sizeof hdr);
    gpp_sha256_update(&r->frames, f->payload, f->len);
    r->nframes++;
}

/* Decode `s` in pieces of at most `scale` bytes (0: all at once). */
static void decode(const uint8_t *s, size_t n, size_t max, size_t scale, uint64_t seed,
                   int check_msgs, result *r)
{
    gpp_decoder d;
    gpp_decoder_init(&d, max);
    gpp_error err;
    gpp_sha256_init(&r->frames);
    r->nframes = 0;
    r->rc = 0;
    size_t off = 0;
    while (off < n && r->rc == 0) {
        size_t piece = scale ? 1 + (size_t)(next_rand(&seed) % scale) : n;
        if (piece > n - off) piece = n - off;
        uint8_t *copy = malloc(piece);
        CHECK(copy != NULL);
        memcpy(copy, s + off, piece);
        off += piece;
        CHECK(gpp_decoder_feed(&d, copy, piece, &err) == 0);
        gpp_frame f;
        int rc;
        while ((rc = gpp_decoder_next(&d, &f, &err)) == 1) {
            CHECK(f.len <= max);
            CHECK(gpp_msg_type_name(f.type) != NULL);
            note_frame(r, &f);
            if (check_msgs) check_message(&f);
        }
        if (rc == 0) {
            CHECK(gpp_decoder_offset(&d) == off);
        } else {
            CHECK(rc == GPP_ETOOBIG || rc == GPP_EFORMAT);
            r->rc = rc;
            /* refused from now on, with the same error, consuming nothing */
            uint64_t at = gpp_decoder_offset(&d);
            gpp_error again;
            CHECK(gpp_decoder_feed(&d, copy, piece, &again) == rc);
            CHECK(strcmp(again.code, err.code) == 0);
            CHECK(gpp_decoder_next(&d, &f, &again) == rc);
            CHECK(gpp_decoder_offset(&d) == at);
        }
        memset(copy, 0xA5, piece);
        free(copy);
    }
    r->offset = gpp_decoder_offset(&d);
    gpp_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t mode = data[0];
    uint64_t seed = data[1];
    const uint8_t *s = data + 2;
    size_t n = size - 2;
    static const size_t scales[4] = {1, 16, 256, 0};
    size_t scale = scales[mode & 3];
    if (scale == 0) scale = n ? n : 1;
    size_t max = (mode & 4) ? 256 : GPP_FRAME_MAX;

    result whole, chunked;
    decode(s, n, max, 0, 0, 0, &whole);
    decode(s, n, max, scale, seed, 1, &chunked);
    CHECK(whole.nframes == chunked.nframes);
    CHECK(whole.rc == chunked.rc);
    CHECK(whole.offset == chunked.offset);
    uint8_t a[32], b[32];
    gpp_sha256_final(&whole.frames, a);
    gpp_sha256_final(&chunked.frames, b);
    CHECK(memcmp(a, b, 32) == 0);
    return 0;
}
