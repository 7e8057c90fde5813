/* tests/integration/test_gppd_config.c - gppd's flags and config file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char conf_path[64];

static void write_conf(const char *text)
{
    snprintf(conf_path, sizeof conf_path, "/tmp/gppd-conf-XXXXXX");
    int fd = mkstemp(conf_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int parse(gppd_config *c, gpp_error *e, int argc, const char **argv)
{
    config_defaults(c);
    memset(e, 0, sizeof *e);
    return config_parse_args(c, argc, (char **)(uintptr_t)argv, e);
}

static void test_defaults(void **state)
{
    (void)state;
    gppd_config c;
    gpp_error e;
    const char *argv[] = {"gppd"};
    assert_int_equal(parse(&c, &e, 1, argv), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_string_equal(c.worker_listen, "127.0.0.1:7070");
    assert_string_equal(c.data_dir, "./gpp-data");
    assert_int_equal(c.worker_grace, 60);
    assert_int_equal(c.local_workers, 0);
    assert_false(c.help);
}

static void test_flags(void **state)
{
    (void)state;
    gppd_config c;
    gpp_error e;
    const char *argv[] = {"gppd", "--listen", "0.0.0.0:0", "--worker-listen=[::1]:7071",
                          "--data-dir", "/var/lib/gppd", "--local-workers", "2",
                          "--worker-grace=5", "--web-root", "/srv/web"};
    assert_int_equal(parse(&c, &e, 11, argv), 0);
    assert_string_equal(c.listen, "0.0.0.0:0");
    assert_string_equal(c.worker_listen, "[::1]:7071");
    assert_string_equal(c.data_dir, "/var/lib/gppd");
    assert_string_equal(c.web_root, "/srv/web");
    assert_int_equal(c.local_workers, 2);
    assert_int_equal(c.worker_grace, 5);
}

static void test_bad_flags(void **state)
{
    (void)state;
    gppd_config c;
    gpp_error e;
    const char *a1[] = {"gppd", "--bogus"};
    assert_int_equal(parse(&c, &e, 2, a1), GPP_EINVAL);
    assert_non_null(strstr(e.message, "--bogus"));
    const char *a2[] = {"gppd", "--listen"};
    assert_int_equal(parse(&c, &e, 2, a2), GPP_EINVAL);
    assert_non_null(strstr(e.message, "needs a value"));
    const char *a3[] = {"gppd", "--listen", "localhost"};
    assert_int_equal(parse(&c, &e, 3, a3), GPP_EINVAL);
    const char *a4[] = {"gppd", "--listen", "1.2.3.4:70000"};
    assert_int_equal(parse(&c, &e, 3, a4), GPP_EINVAL);
    const char *a5[] = {"gppd", "--worker-grace", "0"};
    assert_int_equal(parse(&c, &e, 3, a5), GPP_EINVAL);
    const char *a6[] = {"gppd", "--local-workers", "two"};
    assert_int_equal(parse(&c, &e, 3, a6), GPP_EINVAL);
    const char *a7[] = {"gppd", "--listen", "::1:80"};
    assert_int_equal(parse(&c, &e, 3, a7), GPP_EINVAL);
    const char *a8[] = {"gppd", "--help", "--version"};
    assert_int_equal(parse(&c, &e, 3, a8), 0);
    assert_true(c.help && c.version);
}

static void test_config_file_and_flags_win(void **state)
{
    (void)state;
    write_conf("# gppd settings\n"
               "listen = 127.0.0.1:9000   # http\n"
               "\n"
               "data_dir = \"/srv/gppd data\"\n"
               "worker-grace=30\n"
               "  local-workers = 3\n");
    gppd_config c;
    gpp_error e;
    const char *argv[] = {"gppd", "--config", conf_path, "--listen", "127.0.0.1:9001"};
    assert_int_equal(parse(&c, &e, 5, argv), 0);
    assert_string_equal(c.listen, "127.0.0.1:9001");          /* the flag wins */
    assert_string_equal(c.data_dir, "/srv/gppd data");
    assert_int_equal(c.worker_grace, 30);
    assert_int_equal(c.local_workers, 3);
    unlink(conf_path);
}

static void test_config_file_errors(void **state)
{
    (void)state;
    gppd_config c;
    gpp_error e;
    write_conf("listen = 127.0.0.1:9000\n# fine\nbogus = 1\n");
    const char *argv[] = {"gppd", "--config", conf_path};
    assert_int_equal(parse(&c, &e, 3, argv), GPP_EINVAL);
    char want[128];
    snprintf(want, sizeof want, "%s:3: unknown key 'bogus'", conf_path);
    assert_string_equal(e.message, want);
    unlink(conf_path);
    write_conf("listen 127.0.0.1:9000\n");
    assert_int_equal(parse(&c, &e, 3, argv), GPP_EINVAL);
    assert_non_null(strstr(e.message, ":1: expected `key = value`"));
    unlink(conf_path);
    write_conf("worker-grace = soon\n");
    assert_int_equal(parse(&c, &e, 3, argv), GPP_EINVAL);
    assert_non_null(strstr(e.message, ":1:"));
    unlink(conf_path);
    const char *missing[] = {"gppd", "--config", "/nonexistent/gppd.conf"};
    assert_int_equal(parse(&c, &e, 3, missing), GPP_EIO);
    assert_non_null(strstr(e.message, "/nonexistent/gppd.conf"));
}

static void test_split_addr(void **state)
{
    (void)state;
    char host[CONFIG_ADDR_MAX];
    int port;
    assert_int_equal(config_split_addr("127.0.0.1:0", host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 0);
    assert_int_equal(config_split_addr("[::]:8080", host, &port), 0);
    assert_string_equal(host, "::");
    assert_int_equal(port, 8080);
    assert_int_equal(config_split_addr(":80", host, &port), GPP_EINVAL);
    assert_int_equal(config_split_addr("h:-1", host, &port), GPP_EINVAL);
    assert_int_equal(config_split_addr("h:", host, &port), GPP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_config_file_and_flags_win),
        cmocka_unit_test(test_config_file_errors),
        cmocka_unit_test(test_split_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
