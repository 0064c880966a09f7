/* test_gpu_kernels.c: the attention kernels on the GPU against the fp64 reference.
 *
 * Runs the quick subset of the kernel-check battery (usp/kcheck.h) through
 * the built-in kernels and through the example plugin: odd lengths, causal
 * offsets, slices, GQA, bf16/fp16/fp32, rows that see no key, two ring steps
 * merged, and the a2a pack/unpack kernels. Without a usable GPU the whole
 * program is skipped (exit 77) with the reason. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include "usp/kcheck.h"
#include "usp/kernel.h"

#define SKIP 77

static void run_quick(const usp_kernel *k, int max_cases) {
    int run = 0;
    for (int i = 0; i < usp_kcheck_count() && run < max_cases; i++) {
        const usp_kcheck_case *c = usp_kcheck_case_at(i);
        if (!c->quick) continue;
        usp_kcheck_result r;
        assert_int_equal(usp_kcheck_run(k, c, 77 + (uint64_t)i, &r), USP_OK);
        printf("  %-24s O %.2e LSE %.2e dQ %.2e dK %.2e dV %.2e  %s %s\n", c->name, r.err[USP_KC_O],
               r.err[USP_KC_LSE], r.err[USP_KC_DQ], r.err[USP_KC_DK], r.err[USP_KC_DV],
               r.skipped ? "skip" : r.pass ? "pass" : "FAIL", r.note);
        assert_false(r.skipped);
        assert_true(r.pass);
        run++;
    }
    assert_true(run > 0);
}

static void builtin_quick_battery(void **state) {
    (void)state;
    run_quick(usp_kernel_builtin(), 1000);
}

static void example_plugin_passes(void **state) {
    (void)state;
    const usp_kernel *k = NULL;
    void *h = NULL;
    assert_int_equal(usp_kernel_load(USP_NAIVE_PLUGIN, &k, &h), USP_OK);
    run_quick(k, 6);
    usp_kernel_unload(h);
}

int main(void) {
    if (usp_kcheck_gpu_ready() != USP_OK) {
        printf("skipped: %s\n", usp_error());
        return SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builtin_quick_battery),
        cmocka_unit_test(example_plugin_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
