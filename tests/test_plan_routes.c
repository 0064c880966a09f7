/* test_plan_routes.c: the planner's bypass routes (sim/plan/plan_routes.h)
 * are SimGrid's own routes.
 *
 * On h100-fattree with 5 nodes (40 GPUs), every ordered pair of GPUs on two
 * hosts: SimGrid's shortest-path route (asked before the pair has a bypass)
 * and the route after plan_routes_prepare made the pair's bypass route from
 * its shape must be the same links in the same order. Every pair must go
 * through a bypass (otherwise the comparison proves nothing). A route is a
 * list of links: equal or not, no tolerance.
 *
 * SimGrid loads one platform per process, so this test loads one. The same
 * check at any size, sampled: test_plan_routes SPEC GPUS STRIDE compares the
 * routes from every STRIDE-th GPU to every other and prints the counts
 * (sim/plan/README.md quotes it at 16384 GPUs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <simgrid/engine.h>
#include <simgrid/host.h>

#include "internal.h"
#include "plan_routes.h"

static const char *spec = "h100-fattree";
static int gpus = 40, stride = 1;

static int cmp_hosts(const void *a, const void *b) {
    return sim_natural_cmp(sg_host_get_name(*(const sg_host_t *)a), sg_host_get_name(*(const sg_host_t *)b));
}

/* Loads the platform and compares; returns the pairs compared. */
static long check(long *bypassed, long *bad, char *why, int n) {
    char path[4096];
    if (sim_write_preset(spec, gpus, "usp-test-routes", path, sizeof path) != USP_OK) return -1;
    char *argv[] = {"test_plan_routes", "--log=root.thres:warning", NULL};
    int argc = 2;
    simgrid_init(&argc, argv);
    simgrid_load_platform(path);
    unlink(path);
    size_t count = sg_host_count();
    if (count < (size_t)gpus) return -1;
    sg_host_t *hosts = sg_host_list();
    qsort(hosts, count, sizeof *hosts, cmp_hosts);
    long pairs = plan_routes_init(hosts, gpus) ? plan_routes_verify(stride, bypassed, bad, why, n) : -2;
    free(hosts);
    return pairs;
}

static void every_pair_is_simgrids_route(void **state) {
    (void)state;
    long bypassed = 0, bad = 0;
    char why[256] = "";
    long pairs = check(&bypassed, &bad, why, sizeof why);
    print_message("%ld pairs, %ld through bypass routes, %ld differ%s%s\n", pairs, bypassed, bad, bad ? ": " : "", why);
    assert_int_equal(pairs, 40L * 39L);
    assert_int_equal(bypassed, pairs);
    assert_int_equal(bad, 0);
}

int main(int argc, char **argv) {
    if (argc == 4) {
        spec = argv[1];
        gpus = atoi(argv[2]);
        stride = atoi(argv[3]);
        long bypassed = 0, bad = 0;
        char why[256] = "";
        long pairs = check(&bypassed, &bad, why, sizeof why);
        printf("%s, %d GPUs, sources every %d: %ld pairs, %ld through bypass routes, %ld differ%s%s\n", spec, gpus,
               stride, pairs, bypassed, bad, bad ? ": " : "", why);
        return pairs > 0 && bad == 0 ? 0 : 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(every_pair_is_simgrids_route)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
