/* SHA-256: NIST vectors, streaming == one-shot at every split, and agreement
 * with coreutils `sha256sum` on random files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpp/rng.h"
#include "gpp/sha256.h"

static void hex_of(const void *data, size_t len, char out[65])
{
    uint8_t d[32];
    gpp_sha256(data, len, d);
    gpp_sha256_hex(d, out);
}

/* FIPS 180-4 examples (NIST CSRC "SHA256.pdf", "SHA2_Additional.pdf"). */
static void test_nist_vectors(void **state)
{
    (void)state;
    char hex[65];
    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(strlen(m448) * 8, 448);
    hex_of(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                       "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    assert_int_equal(strlen(m896) * 8, 896);
    hex_of(m896, strlen(m896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void **state)
{
    (void)state;
    const char *want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    char hex[65];
    hex_of(a, n, hex);
    assert_string_equal(hex, want);
    /* the same through the streaming API in odd-sized pieces */
    gpp_sha256_ctx c;
    gpp_sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < n) {
        size_t take = step < n - off ? step : n - off;
        gpp_sha256_update(&c, a + off, take);
        off += take;
        step = step * 3 % 1009 + 1;
    }
    uint8_t d[32];
    gpp_sha256_final(&c, d);
    gpp_sha256_hex(d, hex);
    assert_string_equal(hex, want);
    free(a);
}

static void test_every_split(void **state)
{
    (void)state;
    uint8_t msg[200];
    gpp_rng r;
    gpp_rng_seed(&r, 200);
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)gpp_rng_next(&r);
    uint8_t want[32];
    gpp_sha256(msg, sizeof msg, want);
    for (size_t i = 0; i <= sizeof msg; i++) {
        for (size_t j = i; j <= sizeof msg; j++) {
            gpp_sha256_ctx c;
            uint8_t got[32];
            gpp_sha256_init(&c);
            gpp_sha256_update(&c, msg, i);
            gpp_sha256_update(&c, msg + i, j - i);
            gpp_sha256_update(&c, msg + j, sizeof msg - j);
            gpp_sha256_final(&c, got);
            assert_memory_equal(got, want, 32);
        }
    }
    /* one byte at a time */
    gpp_sha256_ctx c;
    uint8_t got[32];
    gpp_sha256_init(&c);
    for (size_t i = 0; i < sizeof msg; i++) gpp_sha256_update(&c, msg + i, 1);
    gpp_sha256_final(&c, got);
    assert_memory_equal(got, want, 32);
}

/* A copied context continues independently of the original. */
static void test_context_copy(void **state)
{
    (void)state;
    gpp_sha256_ctx a, b;
    gpp_sha256_init(&a);
    gpp_sha256_update(&a, "ab", 2);
    b = a;
    gpp_sha256_update(&a, "c", 1);
    gpp_sha256_update(&b, "d", 1);
    uint8_t da[32], db[32], wa[32], wb[32];
    gpp_sha256_final(&a, da);
    gpp_sha256_final(&b, db);
    gpp_sha256("abc", 3, wa);
    gpp_sha256("abd", 3, wb);
    assert_memory_equal(da, wa, 32);
    assert_memory_equal(db, wb, 32);
    assert_memory_not_equal(da, db, 32);
}

static void test_hex_round_trip(void **state)
{
    (void)state;
    uint8_t d[32], back[32];
    gpp_sha256("abc", 3, d);
    char hex[65];
    gpp_sha256_hex(d, hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(gpp_sha256_from_hex(hex, back), 0);
    assert_memory_equal(d, back, 32);

    memset(back, 0x5a, sizeof back);
    uint8_t untouched[32];
    memcpy(untouched, back, 32);
    char bad[80];
    strcpy(bad, hex);
    bad[10] = 'A';                                   /* upper case */
    assert_int_equal(gpp_sha256_from_hex(bad, back), GPP_EFORMAT);
    strcpy(bad, hex);
    bad[63] = 'g';                                   /* not hex */
    assert_int_equal(gpp_sha256_from_hex(bad, back), GPP_EFORMAT);
    strcpy(bad, hex);
    bad[63] = '\0';                                  /* 63 digits */
    assert_int_equal(gpp_sha256_from_hex(bad, back), GPP_EFORMAT);
    strcpy(bad, hex);
    strcat(bad, "0");                                /* 65 digits */
    assert_int_equal(gpp_sha256_from_hex(bad, back), GPP_EFORMAT);
    assert_int_equal(gpp_sha256_from_hex("", back), GPP_EFORMAT);
    assert_int_equal(gpp_sha256_from_hex(NULL, back), GPP_EFORMAT);
    assert_memory_equal(back, untouched, 32);
}

/* Run `sha256sum` on the given files; fill hexes[i] in order. */
static void run_sha256sum(char paths[][256], size_t n, char hexes[][65])
{
    size_t cap = 64 + n * 260;
    char *cmd = malloc(cap);
    assert_non_null(cmd);
    strcpy(cmd, "sha256sum");
    for (size_t i = 0; i < n; i++) {
        strcat(cmd, " '");
        strcat(cmd, paths[i]);
        strcat(cmd, "'");
    }
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[512];
    size_t got = 0;
    while (got < n && fgets(line, sizeof line, p)) {
        assert_true(strlen(line) > 64 && line[64] == ' ');
        memcpy(hexes[got], line, 64);
        hexes[got][64] = '\0';
        got++;
    }
    assert_int_equal(pclose(p), 0);
    assert_int_equal(got, n);
    free(cmd);
}

/* Random files of every length around the padding boundaries and one large
 * odd-sized file: gpp_sha256_file and gpp_sha256 agree with sha256sum. */
static void test_against_sha256sum(void **state)
{
    (void)state;
    char dir[] = "/tmp/gpp-sha256-XXXXXX";
    assert_non_null(mkdtemp(dir));
    enum { NSMALL = 130, NFILES = NSMALL + 1 };
    static char paths[NFILES][256];
    static char want[NFILES][65];
    static uint8_t big[300007];
    gpp_rng r;
    gpp_rng_seed(&r, 256);
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)gpp_rng_next(&r);
    size_t lens[NFILES];
    for (size_t i = 0; i < NFILES; i++) {
        lens[i] = i < NSMALL ? i : sizeof big;
        snprintf(paths[i], sizeof paths[i], "%s/f%zu", dir, i);
        FILE *f = fopen(paths[i], "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(big, 1, lens[i], f), lens[i]);
        assert_int_equal(fclose(f), 0);
    }
    run_sha256sum(paths, NFILES, want);
    for (size_t i = 0; i < NFILES; i++) {
        uint8_t d[32];
        char hex[65];
        gpp_error err;
        memset(&err, 0, sizeof err);
        assert_int_equal(gpp_sha256_file(paths[i], d, &err), 0);
        gpp_sha256_hex(d, hex);
        assert_string_equal(hex, want[i]);
        hex_of(big, lens[i], hex);
        assert_string_equal(hex, want[i]);
        assert_int_equal(unlink(paths[i]), 0);
    }
    assert_int_equal(rmdir(dir), 0);
}

static void test_file_errors(void **state)
{
    (void)state;
    uint8_t d[32];
    gpp_error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(gpp_sha256_file("/nonexistent/gpp/file", d, &err), GPP_EIO);
    assert_string_equal(err.code, "io_error");
    assert_string_equal(err.field, "/nonexistent/gpp/file");
    assert_non_null(strstr(err.message, "No such file"));
    /* a directory opens but cannot be read */
    memset(&err, 0, sizeof err);
    assert_int_equal(gpp_sha256_file("/tmp", d, &err), GPP_EIO);
    assert_string_equal(err.code, "io_error");
    /* err may be NULL */
    assert_int_equal(gpp_sha256_file("/nonexistent/gpp/file", d, NULL), GPP_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nist_vectors),
        cmocka_unit_test(test_million_a),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_context_copy),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_against_sha256sum),
        cmocka_unit_test(test_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
