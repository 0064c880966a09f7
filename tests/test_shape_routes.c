/* test_shape_routes.c: the bypass routes of identical nodes
 * (sim/network/shape_routes.h), which the planner and the engine use, are
 * SimGrid's own routes.
 *
 * On h100-fattree with 5 nodes (40 GPUs), every ordered pair of GPUs on two
 * hosts: SimGrid's shortest-path route (asked before the pair has a bypass)
 * and the route after sim_shape_routes_prepare made the pair's bypass route from
 * its shape must be the same links in the same order. Every pair must go
 * through a bypass (otherwise the comparison proves nothing). A route is a
 * list of links: equal or not, no tolerance.
 *
 * A platform of the same names whose nodes are not alike (the preset on 3
 * nodes with a link added between GPU 0 of nodes 2 and 1) must be refused by
 * the sampled check of sim_shape_routes_init: SimGrid's own routing stays.
 *
 * SimGrid loads one platform per process, so each run of this test loads
 * one (`test_shape_routes --unlike` is the second case). The same
 * check at any size, sampled: test_shape_routes SPEC GPUS STRIDE compares the
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
#include <simgrid/link.h>
#include <xbt/dynar.h>

#include "internal.h"
#include "shape_routes.h"

static const char *spec = "h100-fattree";
static int gpus = 40, stride = 1;

static int cmp_hosts(const void *a, const void *b) {
    return sim_natural_cmp(sg_host_get_name(*(const sg_host_t *)a), sg_host_get_name(*(const sg_host_t *)b));
}

/* The preset's XML with `link` inserted before its first route and `route`
 * before its zone ends (NULL: as is), loaded; its hosts in natural order
 * (NULL on failure). */
static sg_host_t *load(const char *link, const char *route) {
    char path[4096];
    if (sim_write_preset(spec, gpus, "usp-test-routes", path, sizeof path) != USP_OK) return NULL;
    if (link) {
        FILE *f = fopen(path, "r");
        static char xml[1 << 20];
        size_t n = f ? fread(xml, 1, sizeof xml - 1, f) : 0;
        if (f) fclose(f);
        xml[n] = 0;
        char *first = strstr(xml, "<route "), *end = strstr(xml, "</zone>");
        if (!first || !end || !(f = fopen(path, "w"))) return NULL;
        fprintf(f, "%.*s%s    %.*s%s%s", (int)(first - xml), xml, link, (int)(end - first), first, route, end);
        fclose(f);
    }
    char *argv[] = {"test_shape_routes", "--log=root.thres:warning", NULL};
    int argc = 2;
    simgrid_init(&argc, argv);
    simgrid_load_platform(path);
    unlink(path);
    size_t count = sg_host_count();
    if (count < (size_t)gpus) return NULL;
    sg_host_t *hosts = sg_host_list();
    qsort(hosts, count, sizeof *hosts, cmp_hosts);
    return hosts;
}

/* Loads the platform and compares; returns the pairs compared. */
static long check(long *bypassed, long *bad, char *why, int n) {
    sg_host_t *hosts = load(NULL, NULL);
    if (!hosts) return -1;
    long pairs = sim_shape_routes_init(hosts, gpus) ? sim_shape_routes_verify(stride, bypassed, bad, why, n) : -2;
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

/* A link between two nodes that the preset does not have: SimGrid routes
 * GPU 0 of node 2 to GPU 0 of node 1 over it, the shape would not. */
static void unlike_nodes_keep_simgrids_routing(void **state) {
    (void)state;
    gpus = 24; /* 3 nodes: the sampled nodes are 2 and 1 */
    sg_host_t *hosts = load("<link id=\"shortcut\" bandwidth=\"1GBps\" latency=\"0us\"/>\n",
                            "    <route src=\"node2-gpu0\" dst=\"node1-gpu0\"><link_ctn id=\"shortcut\"/></route>\n");
    assert_non_null(hosts);
    assert_string_equal(sg_host_get_name(hosts[16]), "node2-gpu0");
    assert_int_equal(sim_shape_routes_init(hosts, gpus), 0);
    xbt_dynar_t links = xbt_dynar_new(sizeof(sg_link_t), NULL);
    sg_host_get_route(hosts[16], hosts[8], links); /* SimGrid's own route: the added link */
    assert_int_equal(xbt_dynar_length(links), 1);
    assert_string_equal(sg_link_get_name(xbt_dynar_get_as(links, 0, sg_link_t)), "shortcut");
    xbt_dynar_free(&links);
    free(hosts);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--unlike") == 0) {
        const struct CMUnitTest unlike[] = {cmocka_unit_test(unlike_nodes_keep_simgrids_routing)};
        return cmocka_run_group_tests(unlike, NULL, NULL);
    }
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
