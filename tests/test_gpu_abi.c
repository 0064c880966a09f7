/* test_gpu_abi.c: loading kernel plugins, without running them.
 *
 * The example plugin is accepted, and so is the same plugin built for ABI 1
 * (which takes no masks); a plugin built for a future ABI version, a
 * library without the entry symbol and a missing file are refused with a
 * reason that names the problem. dlopen needs no GPU, so this runs anywhere
 * usp_gpu is built. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include "usp/kernel.h"

static void example_plugin_loads(void **state) {
    (void)state;
    const usp_kernel *k = NULL;
    void *h = NULL;
    assert_int_equal(usp_kernel_load(USP_NAIVE_PLUGIN, &k, &h), USP_OK);
    assert_non_null(k);
    assert_int_equal(k->abi_version, USP_KERNEL_ABI_VERSION);
    assert_non_null(k->forward);
    assert_non_null(k->backward);
    usp_kernel_unload(h);
}

/* A plugin of ABI 1 still loads; it takes no masks, and says so. */
static void abi1_plugin_loads_without_masks(void **state) {
    (void)state;
    const usp_kernel *k = NULL;
    void *h = NULL;
    assert_int_equal(usp_kernel_load(USP_NAIVE_PLUGIN_V1, &k, &h), USP_OK);
    assert_int_equal(k->abi_version, 1);
    assert_false(usp_kernel_takes_masks(k));
    assert_string_equal(usp_kernel_mask_refusal(k), "plugin has ABI v1, no masks");
    usp_kernel_unload(h);
    assert_true(usp_kernel_takes_masks(usp_kernel_builtin()));
    assert_null(usp_kernel_mask_refusal(usp_kernel_builtin()));
    assert_int_equal(usp_kernel_load(USP_NAIVE_PLUGIN, &k, &h), USP_OK);
    assert_true(usp_kernel_takes_masks(k));
    usp_kernel_unload(h);
}

/* The mask fields come after every ABI-1 field, so an ABI-1 kernel reads
 * the arguments it knows at the offsets it was built with. */
static void abi2_fields_extend_abi1_args(void **state) {
    (void)state;
    assert_true(offsetof(usp_kfwd_args, mask_lo) >= offsetof(usp_kfwd_args, scale) + sizeof(float));
    assert_true(offsetof(usp_kbwd_args, mask_lo) >= offsetof(usp_kbwd_args, scale) + sizeof(float));
    assert_true(offsetof(usp_kfwd_args, mask_hi) > offsetof(usp_kfwd_args, mask_lo));
    assert_true(offsetof(usp_kbwd_args, mask_hi) > offsetof(usp_kbwd_args, mask_lo));
}

static void version_zero_refused(void **state) {
    (void)state;
    usp_kernel k = *usp_kernel_builtin();
    k.abi_version = 0;
    assert_int_equal(usp_kernel_validate(&k, "v0"), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "ABI version 0"));
}

static void wrong_abi_version_refused(void **state) {
    (void)state;
    const usp_kernel *k = (const usp_kernel *)1;
    void *h = (void *)1;
    assert_int_equal(usp_kernel_load(USP_BAD_ABI_PLUGIN, &k, &h), USP_EINVAL);
    assert_null(k);
    assert_null(h);
    assert_non_null(strstr(usp_error(), "ABI version"));
}

static void missing_symbol_refused(void **state) {
    (void)state;
    const usp_kernel *k;
    void *h;
    /* libm is a shared object without usp_kernel_entry */
    assert_int_equal(usp_kernel_load("libm.so.6", &k, &h), USP_EINVAL);
    assert_non_null(strstr(usp_error(), USP_KERNEL_ENTRY_SYMBOL));
}

static void missing_file_refused(void **state) {
    (void)state;
    const usp_kernel *k;
    void *h;
    assert_int_equal(usp_kernel_load("/nonexistent/plugin.so", &k, &h), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "cannot load"));
}

static void null_function_refused(void **state) {
    (void)state;
    usp_kernel k = *usp_kernel_builtin();
    assert_int_equal(usp_kernel_validate(&k, "builtin"), USP_OK);
    k.merge = NULL;
    assert_int_equal(usp_kernel_validate(&k, "edited"), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "merge is NULL"));
    k = *usp_kernel_builtin();
    k.size = 8;
    assert_int_equal(usp_kernel_validate(&k, "small"), USP_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(example_plugin_loads),
        cmocka_unit_test(wrong_abi_version_refused),
        cmocka_unit_test(abi1_plugin_loads_without_masks),
        cmocka_unit_test(abi2_fields_extend_abi1_args),
        cmocka_unit_test(version_zero_refused),
        cmocka_unit_test(missing_symbol_refused),
        cmocka_unit_test(missing_file_refused),
        cmocka_unit_test(null_function_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
