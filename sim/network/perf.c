/* perf.c: `usp nccl`, nccl-tests' size sweep of one collective, simulated.
 *
 * One simulation (a forked child, SimGrid initializes once per process) runs
 * every size in turn: each rank is an actor on its GPU's host; per size all
 * ranks meet at a barrier, make their plan (collectives.c), pay its delay,
 * post its messages, wait for them, and meet again; the time between the two
 * barriers is the call's time (nccl-tests reports the mean of identical
 * iterations; the simulation is deterministic, so one is enough). */
#define _POSIX_C_SOURCE 200809L
#include "../internal.h"
#include "nccl.h"
#include "usp/fdio.h"
#include "usp/json.h"
#include "usp/nccl.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <simgrid/actor.h>
#include <simgrid/barrier.h>
#include <simgrid/comm.h>
#include <simgrid/engine.h>
#include <simgrid/host.h>
#include <simgrid/mailbox.h>

enum { TYPE_SIZE = 4, MAX_SIZES = 4096 }; /* float, as nccl-tests' default -d float */

const char *const *usp_nccl_ops(void) {
    static const char *names[SIM_COLL_COUNT + 1];
    for (int i = 0; i < SIM_COLL_COUNT; i++) names[i] = SIM_COLL_OPS[i].name;
    return names;
}

/* ----------------------------------------------------------- the child */

typedef struct {
    sim_coll op;
    int n, nsizes, align;
    const double *sizes;
    usp_nccl_row *rows;
    sg_host_t *hosts;
    sim_net net;
    sg_bar_t barrier;
    int failed;
    int *worst;              /* [nsizes]: the slowest transport any rank used */
} perf_state;

static perf_state g_perf;

/* nccl-tests' sizes: whole elements, and for the ops that split the buffer
 * among the ranks a multiple of the ranks (alltoall of 8 ranks at 8 bytes is
 * 0 bytes). Explicit sizes (a published table's) are kept as given. */
static double aligned(double size, sim_coll op, int n, int align) {
    if (!align) return size;
    double unit = TYPE_SIZE * (op == SIM_COLL_ALLTOALL || op == SIM_COLL_ALLGATHER ||
                               op == SIM_COLL_REDUCESCATTER ? n : 1);
    return floor(size / unit) * unit;
}

static sg_mailbox_t mailbox(int from, int to) {
    char name[48];
    snprintf(name, sizeof name, "nccl:%d>%d", from, to);
    return sg_mailbox_by_name(name);
}

static void rank_actor(int argc, char **argv) {
    (void)argc;
    int me = atoi(argv[0]), n = g_perf.n;
    int *members = malloc((size_t)n * sizeof *members);
    double *bytes_to = malloc((size_t)(n + 1) * sizeof *bytes_to);
    sg_comm_t *comms = malloc(2 * (size_t)(n + 1) * sizeof *comms);
    void **got = malloc((size_t)(n + 1) * sizeof *got);
    if (!members || !bytes_to || !comms || !got) g_perf.failed = 1;
    for (int s = 0; s < g_perf.nsizes; s++) {
        sg_barrier_wait(g_perf.barrier);
        if (g_perf.failed) break;
        double t0 = simgrid_get_clock(), size = aligned(g_perf.sizes[s], g_perf.op, n, g_perf.align);
        sim_coll_plan plan;
        int nc = 0;
        if (g_perf.op == SIM_COLL_SENDRECV) {
            int m[2] = {me, (me + 1) % n};
            double b[2];
            sim_coll_plan_make(&g_perf.net, g_perf.op, m, 2, 0, size, &plan, b);
            if (plan.delay_s > 0) sg_actor_sleep_for(plan.delay_s);
            if (n > 1) {
                comms[nc++] = sg_mailbox_put_async(mailbox(me, m[1]), (void *)1, (long)(b[1] + 0.5));
                comms[nc++] = sg_mailbox_get_async(mailbox((me + n - 1) % n, me), &got[0]);
            }
        } else {
            for (int j = 0; j < n; j++) members[j] = j;
            sim_coll_plan_make(&g_perf.net, g_perf.op, members, n, me, size, &plan, bytes_to);
            if (plan.delay_s > 0) sg_actor_sleep_for(plan.delay_s);
            for (int j = 0; j < n; j++) {
                if (j == me) continue;
                comms[nc++] = sg_mailbox_put_async(mailbox(me, j), (void *)1, (long)(bytes_to[j] + 0.5));
                comms[nc++] = sg_mailbox_get_async(mailbox(j, me), &got[j]);
            }
        }
        for (int k = 0; k < nc; k++)
            if (!comms[k] || sg_comm_wait(comms[k]) != SG_OK) g_perf.failed = 1;
        if ((int)plan.xport > g_perf.worst[s]) g_perf.worst[s] = (int)plan.xport; /* enum order: slowest last */
        sg_barrier_wait(g_perf.barrier);
        if (me == 0) {
            usp_nccl_row *r = &g_perf.rows[s];
            r->size = size;
            r->time_us = (simgrid_get_clock() - t0) * 1e6;
            snprintf(r->algo, sizeof r->algo, "%s", sim_algo_name(plan.algo));
            snprintf(r->proto, sizeof r->proto, "%s", sim_proto_name(plan.proto));
            snprintf(r->xport, sizeof r->xport, "%s", sim_xport_name((sim_xport)g_perf.worst[s]));
        }
    }
    free(members);
    free(bytes_to);
    free(comms);
    free(got);
}

static int cmp_host_names(const void *a, const void *b) {
    return sim_natural_cmp(sg_host_get_name(*(const sg_host_t *)a), sg_host_get_name(*(const sg_host_t *)b));
}

typedef struct {
    const char *path;
    sim_coll op;
    int ranks, nsizes, align;
    const double *sizes;
    int per_node;
} child_arg;

/* The first `per` hosts of each node, in order, n of them in all (hosts sorted
 * by name, so that a node's GPUs come together): 0, or -1 with the reason. */
static int hosts_per_node(sg_host_t *hosts, size_t nhosts, int per, int n, char *reason, size_t rn) {
    int kept = 0, local = 0;
    const char *last = NULL;
    for (size_t i = 0; i < nhosts && kept < n; i++) {
        const char *node = sg_host_get_property_value(hosts[i], "node");
        if (!node) {
            snprintf(reason, rn, "--per-node: host %s does not say its node (a preset or usp platform --from-topo "
                     "XML does)", sg_host_get_name(hosts[i]));
            return -1;
        }
        local = last && strcmp(node, last) == 0 ? local + 1 : 0;
        last = node;
        if (local < per) hosts[kept++] = hosts[i];
    }
    if (kept < n) {
        snprintf(reason, rn, "--per-node %d: the platform holds %d such GPUs, fewer than the %d ranks", per, kept, n);
        return -1;
    }
    return 0;
}

/* Writes: loaded (int), status (int), reason[256], ranks (int), then the rows. */
static void child_main(int fd, const void *argp) {
    const child_arg *a = argp;
    char *argv[] = {"usp", "--cfg=network/model:CM02", "--cfg=network/crosstraffic:0",
                    "--cfg=network/TCP-gamma:0", "--log=root.thres:warning", NULL};
    int argc = 5;
    simgrid_init(&argc, argv);
    simgrid_load_platform(a->path);
    int loaded = 1, status = USP_OK;
    char reason[256] = "";
    if (usp_write_full(fd, &loaded, sizeof loaded) != 0) return;
    memset(&g_perf, 0, sizeof g_perf);
    size_t nhosts = sg_host_count();
    int n = a->ranks > 0 ? a->ranks : (int)nhosts;
    if ((size_t)n > nhosts) {
        status = USP_EINVAL;
        snprintf(reason, sizeof reason, "the platform has %zu GPUs, fewer than the %d ranks", nhosts, n);
    }
    if (status == USP_OK) {
        g_perf.hosts = sg_host_list();
        qsort(g_perf.hosts, nhosts, sizeof *g_perf.hosts, cmp_host_names);
        if (a->per_node > 0 && hosts_per_node(g_perf.hosts, nhosts, a->per_node, n, reason, sizeof reason) != 0)
            status = USP_EINVAL;
    }
    if (status == USP_OK) {
        g_perf.op = a->op;
        g_perf.n = n;
        g_perf.nsizes = a->nsizes;
        g_perf.align = a->align;
        g_perf.sizes = a->sizes;
        g_perf.rows = calloc((size_t)a->nsizes, sizeof *g_perf.rows);
        g_perf.worst = calloc((size_t)a->nsizes + 1, sizeof *g_perf.worst);
        g_perf.barrier = sg_barrier_init((unsigned)n);
        if (!g_perf.rows || !g_perf.worst || sim_net_load(&g_perf.net, g_perf.hosts, n) != USP_OK) {
            status = USP_EINTERNAL;
            snprintf(reason, sizeof reason, "out of memory");
        }
    }
    if (status == USP_OK) {
        for (int r = 0; r < n; r++) {
            char name[32], arg[16];
            snprintf(name, sizeof name, "rank%d", r);
            snprintf(arg, sizeof arg, "%d", r);
            char *av[] = {arg, NULL};
            sg_actor_create(name, g_perf.hosts[r], rank_actor, 1, av);
        }
        simgrid_run();
        if (g_perf.failed) {
            status = USP_EINTERNAL;
            snprintf(reason, sizeof reason, "a simulated transfer failed");
        }
    }
    if (usp_write_full(fd, &status, sizeof status) || usp_write_full(fd, reason, sizeof reason) ||
        usp_write_full(fd, &n, sizeof n))
        return;
    if (status == USP_OK) usp_write_full(fd, g_perf.rows, (size_t)a->nsizes * sizeof *g_perf.rows);
}

/* ----------------------------------------------------------- the parent */

static usp_status run_child(const child_arg *a, const char *spec, usp_nccl_row *rows, int *ranks) {
    sim_child c;
    USP_TRY(sim_child_start(&c, child_main, a));
    int loaded = 0, status = -1;
    char reason[256] = "";
    int ok = usp_read_full(c.fd, &loaded, sizeof loaded) == 0 && usp_read_full(c.fd, &status, sizeof status) == 0 &&
             usp_read_full(c.fd, reason, sizeof reason) == 0 && usp_read_full(c.fd, ranks, sizeof *ranks) == 0 &&
             (status != USP_OK || usp_read_full(c.fd, rows, (size_t)a->nsizes * sizeof *rows) == 0);
    sim_child_wait(&c);
    reason[sizeof reason - 1] = '\0';
    usp_status st = USP_OK;
    if (!ok) {
        char why[256];
        sim_child_reason(c.err, why, sizeof why, 1);
        st = !loaded ? usp_fail(USP_EINVAL, "platform %s: %s", spec, why[0] ? why : "SimGrid could not load it")
                     : usp_fail(USP_EINTERNAL, "the simulation ended without a result%s%s", why[0] ? ": " : "", why);
    } else if (status != USP_OK) {
        st = usp_fail(status == USP_EINVAL ? USP_EINVAL : USP_EINTERNAL, "platform %s: %s", spec, reason);
    }
    fclose(c.err);
    return st;
}

/* nccl-tests' sizes: min, min*f, ... up to max (f > 1); the child aligns
 * them once it knows the ranks. */
static int make_sizes(const usp_nccl_options *o, double *sizes) {
    int n = 0;
    for (double s = o->min_bytes; s <= o->max_bytes * (1 + 1e-12) && n < MAX_SIZES; s *= o->factor) {
        sizes[n++] = s;
        if (o->factor <= 1) break;
    }
    return n;
}

usp_status usp_nccl_simulate(const usp_nccl_options *o, usp_nccl_table *t) {
    memset(t, 0, sizeof *t);
    int op = sim_coll_by_name(o->op ? o->op : "");
    if (op < 0)
        return usp_fail(USP_EINVAL, "unknown op '%s' (alltoall, sendrecv, allgather, reducescatter, allreduce)",
                        o->op ? o->op : "");
    if (!o->sizes && (!(o->min_bytes > 0) || !(o->max_bytes >= o->min_bytes) || !(o->factor >= 1)))
        return usp_fail(USP_EINVAL, "sizes: need 0 < min <= max and factor >= 1 (got %g, %g, %g)", o->min_bytes,
                        o->max_bytes, o->factor);
    if (o->ranks < 0 || o->ranks == 1) return usp_fail(USP_EINVAL, "--ranks %d: a collective needs 2 or more", o->ranks);
    if (o->per_node < 0 || (o->per_node > 0 && o->ranks == 0))
        return usp_fail(USP_EINVAL, "--per-node %d: a positive count, with --ranks", o->per_node);
    const char *spec = o->platform ? o->platform : "h200x8";
    char path[4096];
    int temp = usp_platform_is_preset(spec);
    if (temp) USP_TRY(sim_write_preset(spec, o->ranks, "usp-nccl", path, sizeof path));
    else {
        FILE *f = fopen(spec, "r");
        if (!f)
            return usp_fail(USP_EINVAL, "platform '%s' is neither a preset (usp platform --list) nor a readable "
                            "SimGrid XML file (%s)", spec, strerror(errno));
        fclose(f);
        snprintf(path, sizeof path, "%s", spec);
    }
    double *sizes = malloc(MAX_SIZES * sizeof *sizes);
    if (!sizes) { if (temp) unlink(path); return usp_fail(USP_EINTERNAL, "out of memory"); }
    int nsizes = o->sizes ? (o->nsizes < MAX_SIZES ? o->nsizes : MAX_SIZES) : make_sizes(o, sizes);
    if (o->sizes) memcpy(sizes, o->sizes, (size_t)nsizes * sizeof *sizes);
    t->rows = calloc((size_t)(nsizes > 0 ? nsizes : 1), sizeof *t->rows);
    if (!t->rows) { free(sizes); if (temp) unlink(path); return usp_fail(USP_EINTERNAL, "out of memory"); }
    child_arg a = {path, op, o->ranks, nsizes, o->sizes == NULL, sizes, o->per_node};
    int ranks = 0;
    usp_status st = run_child(&a, spec, t->rows, &ranks);
    if (temp) unlink(path);
    if (st != USP_OK) { free(sizes); usp_nccl_table_free(t); return st; }
    const sim_coll_ops *ops = &SIM_COLL_OPS[op];
    snprintf(t->op, sizeof t->op, "%s", ops->name);
    snprintf(t->perf, sizeof t->perf, "%s", ops->perf);
    snprintf(t->redop, sizeof t->redop, "%s", ops->redop);
    snprintf(t->platform, sizeof t->platform, "%s", spec);
    t->ranks = ranks;
    t->nrows = nsizes;
    for (int i = 0; i < nsizes; i++) {
        usp_nccl_row *r = &t->rows[i];
        r->count = (double)ops->count(r->size, ranks, TYPE_SIZE);
        r->algbw = r->time_us > 0 ? r->size / (r->time_us * 1e-6) / 1e9 : 0;
        r->busbw = r->algbw * ops->bus_factor(ranks);
    }
    free(sizes);
    return USP_OK;
}

void usp_nccl_table_free(usp_nccl_table *t) {
    free(t->rows);
    t->rows = NULL;
    t->nrows = 0;
}

void usp_nccl_print(FILE *f, const usp_nccl_table *t) {
    fprintf(f, "# usp nccl: %s on %s, %d ranks -- SIMULATED by usp's NCCL model, not measured\n", t->perf,
            t->platform, t->ranks);
    fprintf(f, "#\n#%12s %14s %9s %7s %6s %10s %8s %8s  %-6s %-6s %s\n", "size", "count", "type", "redop", "root",
            "time", "algbw", "busbw", "algo", "proto", "transport");
    fprintf(f, "#%12s %14s %9s %7s %6s %10s %8s %8s\n", "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)");
    for (int i = 0; i < t->nrows; i++) {
        const usp_nccl_row *r = &t->rows[i];
        fprintf(f, " %12.0f %14.0f %9s %7s %6d %10.2f %8.2f %8.2f  %-6s %-6s %s\n", r->size, r->count, "float",
                t->redop, -1, r->time_us, r->algbw, r->busbw, r->algo, r->proto, r->xport);
    }
    double sum = 0;
    for (int i = 0; i < t->nrows; i++) sum += t->rows[i].busbw;
    fprintf(f, "# Avg bus bandwidth    : %g (simulated)\n", t->nrows ? sum / t->nrows : 0);
}

void usp_nccl_json(FILE *f, const usp_nccl_table *t) {
    fputs("{\"simulated\": true, \"op\": ", f);
    usp_json_write_string(f, t->op);
    fputs(", \"nccl_tests\": ", f);
    usp_json_write_string(f, t->perf);
    fputs(", \"platform\": ", f);
    usp_json_write_string(f, t->platform);
    fprintf(f, ", \"ranks\": %d, \"type\": \"float\", \"redop\": ", t->ranks);
    usp_json_write_string(f, t->redop);
    fputs(", \"rows\": [", f);
    for (int i = 0; i < t->nrows; i++) {
        const usp_nccl_row *r = &t->rows[i];
        fputs(i ? ",\n  {\"size\": " : "\n  {\"size\": ", f);
        usp_json_write_number(f, r->size);
        fputs(", \"count\": ", f);
        usp_json_write_number(f, r->count);
        fputs(", \"time_us\": ", f);
        usp_json_write_number(f, r->time_us);
        fputs(", \"algbw\": ", f);
        usp_json_write_number(f, r->algbw);
        fputs(", \"busbw\": ", f);
        usp_json_write_number(f, r->busbw);
        fputs(", \"algo\": ", f);
        usp_json_write_string(f, r->algo);
        fputs(", \"proto\": ", f);
        usp_json_write_string(f, r->proto);
        fputs(", \"transport\": ", f);
        usp_json_write_string(f, r->xport);
        fputc('}', f);
    }
    fputs("]}\n", f);
}
