/* SHA-256 after FIPS 180-4 (see gpp/sha256.h). */
#include "gpp/sha256.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* FIPS 180-4 section 4.2.2: the first 32 bits of the fractional parts of the
 * cube roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* One 64-byte block into the state (section 6.2.2). */
static void compress(uint32_t h[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++) w[t] = load_be32(block + 4 * t);
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        hh = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void gpp_sha256_init(gpp_sha256_ctx *c)
{
    static const uint32_t H0[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(c->h, H0, sizeof H0);
    c->nbytes = 0;
    c->fill = 0;
    memset(c->block, 0, sizeof c->block);
}

void gpp_sha256_update(gpp_sha256_ctx *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len == 0) return;
    c->nbytes += len;
    if (c->fill > 0) {
        size_t take = 64 - c->fill;
        if (take > len) take = len;
        memcpy(c->block + c->fill, p, take);
        c->fill += take;
        p += take;
        len -= take;
        if (c->fill < 64) return;
        compress(c->h, c->block);
        c->fill = 0;
    }
    while (len >= 64) {
        compress(c->h, p);
        p += 64;
        len -= 64;
    }
    if (len > 0) {
        memcpy(c->block, p, len);
        c->fill = len;
    }
}

void gpp_sha256_final(gpp_sha256_ctx *c, uint8_t out[GPP_SHA256_LEN])
{
    uint64_t bits = c->nbytes * 8;   /* length mod 2^64 bits, as the standard says */
    /* Padding (section 5.1.1): 0x80, zeros, then the 64-bit big-endian length. */
    c->block[c->fill++] = 0x80;
    if (c->fill > 56) {
        memset(c->block + c->fill, 0, 64 - c->fill);
        compress(c->h, c->block);
        c->fill = 0;
    }
    memset(c->block + c->fill, 0, 56 - c->fill);
    for (int i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    compress(c->h, c->block);
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, c->h[i]);
    memset(c, 0, sizeof *c);
}

void gpp_sha256(const void *data, size_t len, uint8_t out[GPP_SHA256_LEN])
{
    gpp_sha256_ctx c;
    gpp_sha256_init(&c);
    gpp_sha256_update(&c, data, len);
    gpp_sha256_final(&c, out);
}

void gpp_sha256_hex(const uint8_t digest[GPP_SHA256_LEN], char out[GPP_SHA256_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < GPP_SHA256_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[GPP_SHA256_HEX_LEN] = '\0';
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

int gpp_sha256_from_hex(const char *hex, uint8_t out[GPP_SHA256_LEN])
{
    uint8_t tmp[GPP_SHA256_LEN];
    if (!hex) return GPP_EFORMAT;
    for (int i = 0; i < GPP_SHA256_LEN; i++) {
        /* hex_digit('\0') < 0, so a short string stops here before reading past it */
        int hi = hex_digit(hex[2 * i]);
        if (hi < 0) return GPP_EFORMAT;
        int lo = hex_digit(hex[2 * i + 1]);
        if (lo < 0) return GPP_EFORMAT;
        tmp[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[GPP_SHA256_HEX_LEN] != '\0') return GPP_EFORMAT;
    memcpy(out, tmp, sizeof tmp);
    return 0;
}

/* Fill *err directly: this module stands alone (it links nothing else). */
static int io_error(gpp_error *err, const char *path, const char *what, int errnum)
{
    if (err) {
        snprintf(err->code, sizeof err->code, "io_error");
        snprintf(err->field, sizeof err->field, "%s", path);
        snprintf(err->message, sizeof err->message, "cannot %s %s: %s",
                 what, path, strerror(errnum));
    }
    return GPP_EIO;
}

int gpp_sha256_file(const char *path, uint8_t out[GPP_SHA256_LEN], gpp_error *err)
{
    uint8_t buf[16 * 1024];
    FILE *f = fopen(path, "rb");
    if (!f) return io_error(err, path, "open", errno);
    gpp_sha256_ctx c;
    gpp_sha256_init(&c);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) gpp_sha256_update(&c, buf, n);
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        fclose(f);
        return io_error(err, path, "read", e);
    }
    fclose(f);
    gpp_sha256_final(&c, out);
    return 0;
}
