/* test_registry.c: plugin registry: lookup, duplicates, ABI (version, frozen minimum
 * struct_size, abi_signature, ABI 1 plugins), shape checks, and spool's optional
 * plugins (spool-<type>.so) loaded on demand by type. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"

static int dummy_flush(spool_instance *ins, void *ctx, const spool_chunk *c)
{
    return SPOOL_OK;
}

static int dummy_run(spool_instance *ins, void *ctx)
{
    return 0;
}

static spool_plugin make(spool_plugin_kind kind, const char *name)
{
    spool_plugin p = {
        .abi_version = SPOOL_ABI_VERSION,
        .struct_size = sizeof(spool_plugin),
        .kind = kind,
        .name = name,
    };
    if (kind == SPOOL_PLUGIN_OUTPUT) {
        p.flush = dummy_flush;
    } else {
        p.run = dummy_run;
    }
    return p;
}

static int setup(void **state)
{
    spool_registry_reset();
    return 0;
}

static void builtins_are_found(void **state)
{
    assert_int_equal(spool_registry_init(), 0);
    assert_non_null(spool_registry_find(SPOOL_PLUGIN_INPUT, "stdin"));
    assert_non_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "file"));
    assert_non_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "stdout"));
    /* Kinds are separate namespaces. */
    assert_null(spool_registry_find(SPOOL_PLUGIN_INPUT, "file"));
    assert_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "nope"));
    const char *names[REGISTRY_NAMES_MAX];
    size_t n = spool_registry_names(SPOOL_PLUGIN_OUTPUT, names, REGISTRY_NAMES_MAX);
    assert_true(n >= 2);
}

static void duplicate_is_refused(void **state)
{
    static spool_plugin a, b, c;
    const char *why = NULL;
    a = make(SPOOL_PLUGIN_OUTPUT, "dup");
    b = make(SPOOL_PLUGIN_OUTPUT, "dup");
    c = make(SPOOL_PLUGIN_INPUT, "dup");
    assert_int_equal(spool_registry_add(&a, "test", &why), 0);
    assert_int_equal(spool_registry_add(&b, "test", &why), -EEXIST);
    assert_non_null(why);
    /* Same name, other kind: fine. */
    assert_int_equal(spool_registry_add(&c, "test", &why), 0);
    assert_ptr_equal(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "dup"), &a);
    assert_ptr_equal(spool_registry_find(SPOOL_PLUGIN_INPUT, "dup"), &c);
}

static void abi_mismatch_is_refused(void **state)
{
    static spool_plugin p;
    const char *why = NULL;
    p = make(SPOOL_PLUGIN_OUTPUT, "future");
    p.abi_version = SPOOL_ABI_VERSION + 1;
    assert_int_equal(spool_registry_add(&p, "test", &why), -EINVAL);
    assert_string_equal(why, "ABI version mismatch");
    p.abi_version = SPOOL_ABI_VERSION;
    p.struct_size = 8;
    assert_int_equal(spool_registry_add(&p, "test", &why), -EINVAL);
    assert_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "future"));
}

/* An external plugin's struct as the loader's ABI check sees it. */
static spool_plugin abi_plugin(void)
{
    spool_plugin p = make(SPOOL_PLUGIN_OUTPUT, "abi");
    p.abi_signature = SPOOL_ABI_SIGNATURE;
    return p;
}

static void abi_check_accepts_current_and_abi1(void **state)
{
    char err[512] = "";
    spool_plugin p = abi_plugin();
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), 0);
    /* Built against ABI 1's header: 120 bytes on LP64, no abi_signature
     * field, so whatever lies where it would be is never read. */
    if (sizeof(void *) == 8) {
        p.struct_size = 120;
        p.abi_signature = 0xdeadbeefull;
        assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), 0);
    }
    /* A plugin built against a newer header with more trailing fields. */
    p = abi_plugin();
    p.struct_size = sizeof(spool_plugin) + 16;
    p.abi_signature = (SPOOL_ABI_SIGNATURE & ~0xfffull) | (sizeof(spool_plugin) + 16);
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), 0);
}

static void abi_check_refuses_with_both_sides(void **state)
{
    char err[512], want[64];
    spool_plugin p = abi_plugin();
    p.abi_version = 2;
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "built against spool ABI version 2"));
    assert_non_null(strstr(err, "expects ABI version 1"));

    p = abi_plugin();
    p.struct_size = 64;
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "plugin struct is 64 bytes"));

    /* Between ABI 1's size and the end of abi_signature: neither. */
    p = abi_plugin();
    p.struct_size = (uint32_t)offsetof(spool_plugin, abi_signature) + 4;
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "neither"));

    p = abi_plugin();
    p.abi_signature = 0;
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "no abi_signature"));

    /* spool_chunk 8 bytes larger on the plugin's side: both sizes named. */
    p = abi_plugin();
    p.abi_signature = SPOOL_ABI_SIGNATURE + ((uint64_t)8 << 12);
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "ABI signature mismatch"));
    snprintf(want, sizeof(want), "chunk %zu", sizeof(spool_chunk) + 8);
    assert_non_null(strstr(err, want));
    snprintf(want, sizeof(want), "expects record %zu", sizeof(spool_record));
    assert_non_null(strstr(err, want));

    /* Each of the other shared structs too. */
    for (int shift = 24; shift <= 48; shift += 12) {
        p = abi_plugin();
        p.abi_signature = SPOOL_ABI_SIGNATURE + ((uint64_t)8 << shift);
        assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    }
    /* The signature's plugin size must agree with struct_size. */
    p = abi_plugin();
    p.struct_size = sizeof(spool_plugin) + 8;
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
    /* Another signature format. */
    p = abi_plugin();
    p.abi_signature = SPOOL_ABI_SIGNATURE + ((uint64_t)1 << 60);
    assert_int_equal(spool_registry_check_abi(&p, err, sizeof(err)), -EINVAL);
}

static void shape_is_checked(void **state)
{
    static spool_plugin p;
    const char *why = NULL;
    p = make(SPOOL_PLUGIN_OUTPUT, "noflush");
    p.flush = NULL;
    assert_int_equal(spool_registry_add(&p, "test", &why), -EINVAL);
    assert_non_null(strstr(why, "flush"));
    p = make(SPOOL_PLUGIN_INPUT, "norun");
    p.run = NULL;
    assert_int_equal(spool_registry_add(&p, "test", &why), -EINVAL);
    p = make(SPOOL_PLUGIN_INPUT, NULL);
    assert_int_equal(spool_registry_add(&p, "test", &why), -EINVAL);
    p = make(SPOOL_PLUGIN_INPUT, "badkind");
    p.kind = (spool_plugin_kind)9;
    assert_int_equal(spool_registry_add(&p, "test", &why), -EINVAL);
}

static void load_file_errors(void **state)
{
    char err[512];
    assert_true(spool_registry_load_file("/nonexistent/plugin.so", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "cannot load plugin"));
    char path[1024];
    snprintf(path, sizeof(path), "%s/test-plugins/bad_abi_plugin/bad_abi_plugin.so",
             getenv("SPOOL_BUILD") ? getenv("SPOOL_BUILD") : "build");
    assert_int_equal(spool_registry_load_file(path, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "ABI version"));
    snprintf(path, sizeof(path), "%s/test-plugins/abi_bad_signature/abi_bad_signature.so",
             getenv("SPOOL_BUILD") ? getenv("SPOOL_BUILD") : "build");
    assert_int_equal(spool_registry_load_file(path, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "ABI signature mismatch"));
    assert_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "abi_bad_signature"));
    /* Built against ABI 1's frozen header (tests/helpers/abi_v1/spool.h). */
    snprintf(path, sizeof(path), "%s/test-plugins/abi_v1_plugin/abi_v1_plugin.so",
             getenv("SPOOL_BUILD") ? getenv("SPOOL_BUILD") : "build");
    assert_int_equal(spool_registry_load_file(path, err, sizeof(err)), 0);
    assert_non_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "abi_v1"));
    snprintf(path, sizeof(path), "%s/test-plugins/test_plugin/test_plugin.so",
             getenv("SPOOL_BUILD") ? getenv("SPOOL_BUILD") : "build");
    assert_int_equal(spool_registry_load_file(path, err, sizeof(err)), 0);
    assert_non_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "test_ext"));
    /* Loading it twice is a duplicate. */
    assert_int_equal(spool_registry_load_file(path, err, sizeof(err)), -EEXIST);
}

/* dir/spool-test_ext.so, a link to the test plugin: one of "spool's optional
 * plugins" as far as the registry can tell. */
static void load_type_on_demand(void **state)
{
    char dir[] = "/tmp/spool-test-registry-XXXXXX", target[1024], link[1100], err[700];
    assert_non_null(mkdtemp(dir));
    snprintf(target, sizeof(target), "%s/test-plugins/test_plugin/test_plugin.so",
             getenv("SPOOL_BUILD") ? getenv("SPOOL_BUILD") : "build");
    snprintf(link, sizeof(link), "%s/spool-test_ext.so", dir);
    char *abs = realpath(target, NULL);
    assert_non_null(abs);
    assert_int_equal(symlink(abs, link), 0);
    free(abs);

    /* load_dir leaves spool-<type>.so files to on-demand loading. */
    spool_errors errs = {0};
    assert_int_equal(spool_registry_load_dir(dir, &errs), 0);
    assert_int_equal(errs.count, 0);
    assert_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "test_ext"));

    /* Named: loaded, then found. */
    assert_int_equal(
        spool_registry_load_type(dir, SPOOL_PLUGIN_OUTPUT, "test_ext", err, sizeof(err)), 0);
    assert_non_null(spool_registry_find(SPOOL_PLUGIN_OUTPUT, "test_ext"));

    /* The file holds an output: asking for an input of that name fails, says why. */
    spool_registry_reset();
    assert_int_equal(
        spool_registry_load_type(dir, SPOOL_PLUGIN_INPUT, "test_ext", err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "does not provide"));

    /* A packaged plugin not installed: the message names the package. */
    assert_int_equal(spool_registry_load_type(dir, SPOOL_PLUGIN_OUTPUT, "kafka", err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "install the package spool-plugin-kafka"));
    assert_non_null(strstr(err, "spool-kafka.so"));
    /* http has one file per kind, both in spool-plugin-http. */
    assert_int_equal(spool_registry_load_type(dir, SPOOL_PLUGIN_INPUT, "http", err, sizeof(err)),
                     -ENOENT);
    assert_non_null(
        strstr(err, "/spool-http-in.so not found (install the package spool-plugin-http"));
    assert_int_equal(spool_registry_load_type(dir, SPOOL_PLUGIN_OUTPUT, "http", err, sizeof(err)),
                     -ENOENT);
    assert_non_null(
        strstr(err, "/spool-http-out.so not found (install the package spool-plugin-http"));

    /* Any other unknown name, or one that is no file name: plain -ENOENT. */
    assert_int_equal(spool_registry_load_type(dir, SPOOL_PLUGIN_OUTPUT, "nope", err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(err, "");
    assert_int_equal(spool_registry_load_type(dir, SPOOL_PLUGIN_OUTPUT, "../x", err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(err, "");

    unlink(link);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(builtins_are_found, setup),
        cmocka_unit_test_setup(duplicate_is_refused, setup),
        cmocka_unit_test_setup(abi_mismatch_is_refused, setup),
        cmocka_unit_test_setup(abi_check_accepts_current_and_abi1, setup),
        cmocka_unit_test_setup(abi_check_refuses_with_both_sides, setup),
        cmocka_unit_test_setup(shape_is_checked, setup),
        cmocka_unit_test_setup(load_file_errors, setup),
        cmocka_unit_test_setup(load_type_on_demand, setup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    spool_registry_reset();
    return rc;
}
