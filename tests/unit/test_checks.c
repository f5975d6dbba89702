/*
 * test_checks.c: the configuration checks plugins share (spool.h,
 * agent/config/checks.c) that have no test of their own elsewhere:
 * spool_check_column_map, the column: field mapping of the database outputs
 * (an empty mapping, an empty field name, a column mapped twice).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"

static const spool_plugin fake = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "fake",
};

/* The result of checking map, and how many errors it reported. */
static int check(const spool_strmap *map, int *errors)
{
    spool_instance *ins = spool__instance_new(&fake, SPOOL_PLUGIN_OUTPUT, 0, "fake");
    assert_non_null(ins);
    int rc = spool_check_column_map(ins, "columns", map);
    *errors = ins->config_errors;
    spool__instance_free(ins);
    return rc;
}

static void column_map(void **state)
{
    (void)state;
    char *keys[] = {"ts", "msg", "ts", "host", "ts"};
    char *values[] = {"timestamp", "value", "key", "", "topic"};
    int errors = 0;
    spool_strmap good = {keys, values, 2};
    assert_int_equal(check(&good, &errors), 0);
    assert_int_equal(errors, 0);
    spool_strmap none = {keys, values, 0};
    assert_int_equal(check(&none, &errors), -EINVAL);
    assert_int_equal(errors, 1);
    /* "ts" twice (then a third time: one error each), "host" with no field */
    spool_strmap bad = {keys, values, 5};
    assert_int_equal(check(&bad, &errors), -EINVAL);
    assert_int_equal(errors, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(column_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
