/* tests/integration/test_gppd_openapi.c - the OpenAPI document served at
 * /api/v1/openapi.json names exactly the routes of the router table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api.h"

static const char *const http_methods[] = {"get", "put", "post", "delete", "patch", "head",
                                           "options", "trace"};

static void test_every_route_documented(void **state)
{
    (void)state;
    cJSON *doc = cJSON_ParseWithLength(gppd_openapi_json, gppd_openapi_json_len);
    assert_non_null(doc);
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    assert_true(cJSON_IsObject(paths));
    size_t n = api_route_count();
    assert_true(n >= 15);
    for (size_t i = 0; i < n; i++) {
        const char *method, *pattern;
        assert_int_equal(api_route_get(i, &method, &pattern), 0);
        char lower[16];
        size_t k = 0;
        for (; method[k] && k < sizeof lower - 1; k++)
            lower[k] = (char)tolower((unsigned char)method[k]);
        lower[k] = '\0';
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(paths, pattern);
        if (!p || !cJSON_GetObjectItemCaseSensitive(p, lower))
            fail_msg("route %s %s is not in openapi.json", method, pattern);
    }
    assert_int_equal(api_route_get(n, &(const char *){0}, &(const char *){0}), -1);
    cJSON_Delete(doc);
}

static void test_every_documented_operation_routed(void **state)
{
    (void)state;
    cJSON *doc = cJSON_ParseWithLength(gppd_openapi_json, gppd_openapi_json_len);
    assert_non_null(doc);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(doc, "openapi");
    assert_true(cJSON_IsString(ver) && strncmp(ver->valuestring, "3.0.", 4) == 0);
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    size_t ops = 0;
    for (const cJSON *p = paths->child; p; p = p->next) {
        for (const cJSON *op = p->child; op; op = op->next) {
            bool is_method = false;
            for (size_t m = 0; m < sizeof http_methods / sizeof http_methods[0]; m++)
                is_method |= strcmp(op->string, http_methods[m]) == 0;
            if (!is_method)
                continue;
            ops++;
            bool found = false;
            for (size_t i = 0; i < api_route_count() && !found; i++) {
                const char *method, *pattern;
                api_route_get(i, &method, &pattern);
                found = strcmp(pattern, p->string) == 0 && strcasecmp(method, op->string) == 0;
            }
            if (!found)
                fail_msg("openapi.json documents %s %s, which the router lacks", op->string,
                         p->string);
            /* every operation describes its responses */
            assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(op, "responses")));
        }
    }
    assert_int_equal(ops, api_route_count());
    cJSON_Delete(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_documented),
        cmocka_unit_test(test_every_documented_operation_routed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
