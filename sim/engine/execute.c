/* execute.c: usp_sim_execute, one simulation in a forked child.
 *
 * SimGrid initializes once per process, so the parent checks what it can
 * (profile, platform, host map), forks, and the child simulates and writes
 * its result back through a pipe: a phase record before and after loading
 * the platform, then one result record. The child's stderr goes to a
 * temporary file: when the child dies (SimGrid aborts on a bad platform
 * file), the parent reports SimGrid's reason instead of hanging or crashing. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "internal.h"
#include "usp/fdio.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { REC_PHASE = 1, REC_RESULT = 2 };

typedef struct {
    int type, value;           /* PHASE: 0 loading the platform, 1 loaded */
} phase_record;

typedef struct {
    int type, status;
    int mode;                  /* sim_mode */
    char message[512];
    char why[SIM_WHY_LEN];     /* not folded: why */
} result_record;

/* ------------------------------------------------------------- the child */

typedef struct { int fd; } child_ctx;

static void report_phase(int loaded, void *ctx) {
    phase_record rec = {REC_PHASE, loaded};
    usp_write_full(((child_ctx *)ctx)->fd, &rec, sizeof rec);
}

/* The arrays the parent expects, in order, and their lengths. */
static int output_arrays(const usp_schedule *s, usp_result *out, double **arrays, size_t *lens) {
    const usp_config *c = &s->cfg;
    size_t q = (size_t)c->batch * c->seq * c->heads * c->head_dim;
    size_t kv = (size_t)c->batch * c->seq * c->kv_heads * c->head_dim;
    size_t lse = (size_t)c->batch * c->heads * c->seq;
    double *a[5] = {out->o, out->lse, out->dq, out->dk, out->dv};
    size_t l[5] = {q, lse, q, kv, kv};
    int n = 0;
    for (int i = 0; i < 5; i++)
        if (a[i]) { arrays[n] = a[i]; lens[n++] = l[i]; }
    return n;
}

static int send_result(int fd, const sim_job *job, const sim_timeline *tl) {
    const usp_schedule *s = job->sched;
    size_t w = (size_t)s->world;
    double times[2] = {tl->time_fwd_s, tl->time_bwd_s};
    if (usp_write_full(fd, times, sizeof times) || usp_write_full(fd, tl->compute_s, w * sizeof(double)) ||
        usp_write_full(fd, tl->comm_s, w * sizeof(double)) ||
        usp_write_full(fd, tl->exposed_s, w * sizeof(double)))
        return -1;
    for (int g = 0; job->keep_steps && g < s->world; g++) {
        size_t n = (size_t)s->ranks[g].nsteps * sizeof(double);
        if (usp_write_full(fd, tl->start[g], n) || usp_write_full(fd, tl->end[g], n)) return -1;
    }
    double *arrays[5];
    size_t lens[5];
    int na = job->inputs ? output_arrays(s, job->outputs, arrays, lens) : 0;
    for (int i = 0; i < na; i++)
        if (usp_write_full(fd, arrays[i], lens[i] * sizeof(double))) return -1;
    return 0;
}

/* A failure SimGrid turns into a crash or a hang where usp knows better
 * what went wrong (routes.c: SimGrid's Dijkstra routing aborts, faults or
 * spins on two unconnected hosts): the result record to send instead, kept
 * up to date before each such call, and a watchdog. */
static int g_result_fd = -1, g_armed_on;
static result_record g_armed;
static const int ARMED_SIGNALS[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGALRM};
enum { NARMED = sizeof ARMED_SIGNALS / sizeof ARMED_SIGNALS[0] };

static void send_armed(int sig) {
    if (usp_write_full(g_result_fd, &g_armed, sizeof g_armed) == 0) _exit(1);
    signal(sig, SIG_DFL);
    raise(sig);
}

void sim_child_arm_failure(const char *message, int watchdog_s) {
    if (g_result_fd < 0) return;
    if (!message) {
        alarm(0);
        for (int i = 0; i < NARMED; i++) signal(ARMED_SIGNALS[i], SIG_DFL);
        g_armed_on = 0;
        return;
    }
    g_armed.type = REC_RESULT;
    g_armed.status = USP_EINVAL;
    sim_copy_str(g_armed.message, sizeof g_armed.message, message);
    if (!g_armed_on)
        for (int i = 0; i < NARMED; i++) signal(ARMED_SIGNALS[i], send_armed);
    g_armed_on = 1;
    if (watchdog_s > 0) alarm((unsigned)watchdog_s);
}

static void child_main(int fd, const void *arg) {
    const sim_job *job = arg;
    child_ctx ctx = {fd};
    g_result_fd = fd;
    sim_timeline tl;
    usp_status st = sim_engine_run(job, &tl, report_phase, &ctx);
    result_record rec = {REC_RESULT, st, st == USP_OK ? (int)tl.mode : SIM_MODE_FULL, "", ""};
    if (st != USP_OK) sim_copy_str(rec.message, sizeof rec.message, usp_error());
    else sim_copy_str(rec.why, sizeof rec.why, tl.why);
    if (usp_write_full(fd, &rec, sizeof rec) == 0 && st == USP_OK && tl.mode != SIM_MODE_FOLD_BROKEN)
        send_result(fd, job, &tl);
}

/* ------------------------------------------------------------ the parent */

typedef struct {
    int phase;              /* last phase the child reported, -1 none */
    int got_result;
    result_record rec;
} child_outcome;

static int read_result(int fd, const usp_schedule *s, usp_result *out, usp_trace *trace, int keep_steps,
                       int numerics) {
    size_t w = (size_t)s->world;
    double times[2];
    double *stats = malloc(3 * w * sizeof *stats);
    if (!stats || usp_read_full(fd, times, sizeof times) || usp_read_full(fd, stats, 3 * w * sizeof *stats)) {
        free(stats);
        return -1;
    }
    out->time_fwd_s = times[0];
    out->time_bwd_s = times[1];
    for (size_t g = 0; g < w; g++) {
        out->ranks[g].compute_s += stats[g];
        out->ranks[g].comm_s += stats[w + g];
        out->ranks[g].exposed_comm_s += stats[2 * w + g];
    }
    free(stats);
    for (int g = 0; keep_steps && g < s->world; g++) {
        const usp_rank_schedule *rs = &s->ranks[g];
        size_t n = (size_t)rs->nsteps;
        double *t = malloc(2 * (n + 1) * sizeof *t);
        int bad = !t || usp_read_full(fd, t, n * sizeof *t) || usp_read_full(fd, t + n, n * sizeof *t);
        for (size_t i = 0; !bad && trace && i < n; i++)
            bad = usp_trace_add(trace, g, (int)i, usp_rank_step(rs, i), t[i] * 1e6, (t[n + i] - t[i]) * 1e6) != USP_OK;
        free(t);
        if (bad) return -1;
    }
    double *arrays[5];
    size_t lens[5];
    int na = numerics ? output_arrays(s, out, arrays, lens) : 0;
    for (int i = 0; i < na; i++)
        if (usp_read_full(fd, arrays[i], lens[i] * sizeof(double))) return -1;
    return 0;
}

static void read_child(int fd, const sim_job *job, usp_result *out, usp_trace *trace, child_outcome *oc) {
    int type;
    oc->phase = -1;
    oc->got_result = 0;
    while (usp_read_full(fd, &type, sizeof type) == 0) {
        if (type == REC_PHASE) {
            phase_record p;
            if (usp_read_full(fd, &p.value, sizeof p.value)) return;
            oc->phase = p.value;
            continue;
        }
        if (type != REC_RESULT || usp_read_full(fd, &oc->rec.status, sizeof oc->rec - sizeof type)) return;
        oc->rec.message[sizeof oc->rec.message - 1] = '\0';
        oc->rec.why[sizeof oc->rec.why - 1] = '\0';
        if (oc->rec.status != USP_OK || oc->rec.mode == SIM_MODE_FOLD_BROKEN) { oc->got_result = 1; return; }
        oc->got_result = read_result(fd, job->sched, out, trace, job->keep_steps, job->inputs != NULL) == 0;
        return;
    }
}

static usp_status child_failed(const child_outcome *oc, int wstatus, FILE *err, const char *platform) {
    char reason[512];
    sim_child_reason(err, reason, sizeof reason, 0);
    if (oc->phase == 0)
        return usp_fail(USP_EINVAL, "platform %s: %s", platform, reason[0] ? reason : "SimGrid could not load it");
    /* a pair routes.c did not ask about: still the platform's fault, not ours */
    if (strstr(reason, "no connecting path") || strstr(reason, "No route") || strstr(reason, "no route"))
        return usp_fail(USP_EINVAL, "platform %s: %s", platform, reason);
    if (WIFSIGNALED(wstatus))
        return usp_fail(USP_EINTERNAL, "the simulation died (signal %d)%s%s", WTERMSIG(wstatus),
                        reason[0] ? ": " : "", reason);
    return usp_fail(USP_EINTERNAL, "the simulation ended without a result%s%s", reason[0] ? ": " : "", reason);
}

static usp_status run_in_child(const sim_job *job, usp_result *out, usp_trace *trace, child_outcome *oc) {
    sim_child c;
    USP_TRY(sim_child_start(&c, child_main, job));
    read_child(c.fd, job, out, trace, oc);
    int wstatus = sim_child_wait(&c);
    usp_status st;
    if (oc->got_result)
        st = oc->rec.status == USP_OK ? USP_OK : usp_fail((usp_status)oc->rec.status, "%s", oc->rec.message);
    else st = child_failed(oc, wstatus, c.err, job->opts && job->opts->platform ? job->opts->platform : "h200x8");
    fclose(c.err);
    return st;
}

/* The simulation, folded where fold.c finds it exact; a fold that a shadow's
 * all-to-all broke (engine.c) is run again in full. */
static usp_status run_sim(sim_job *job, usp_result *out, usp_trace *trace) {
    child_outcome oc;
    USP_TRY(run_in_child(job, out, trace, &oc));
    if (oc.rec.mode == SIM_MODE_FOLD_BROKEN) {
        job->no_fold = 1;
        job->no_fold_why = "folded, an all-to-all's ranks ended apart: simulated again in full";
        USP_TRY(run_in_child(job, out, trace, &oc));
    }
    int U = job->sched->cfg.ulysses;
    out->sim_ranks_simulated = oc.rec.mode == SIM_MODE_FOLDED ? job->sched->world / U : job->sched->world;
    snprintf(out->sim_mode, sizeof out->sim_mode, "%s", oc.rec.mode == SIM_MODE_FOLDED ? "" : oc.rec.why);
    return USP_OK;
}

/* ------------------------------------------------------------ platforms */

static usp_status check_platform_file(const char *spec) {
    FILE *f = fopen(spec, "r");
    if (f) { fclose(f); return USP_OK; }
    if (!strchr(spec, '/') && !strstr(spec, ".xml")) {
        char name[64];
        usp_platform_params p;
        return usp_platform_parse_spec(spec, name, sizeof name, &p); /* names the presets */
    }
    return usp_fail(USP_EINVAL, "platform %s: %s", spec, strerror(errno));
}

/* ------------------------------------------------------------- host map */

static void free_hosts(char **hosts, int n) {
    if (!hosts) return;
    for (int i = 0; i < n; i++) free(hosts[i]);
    free(hosts);
}

typedef struct { const char *name; int rank; } named_rank;

static int cmp_named_ranks(const void *a, const void *b) {
    const named_rank *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->rank > y->rank) - (x->rank < y->rank);
}

/* Every rank is one GPU: two ranks on one host would talk over SimGrid's
 * loopback and each still get a whole GPU of compute, a silent wrong answer.
 * Sorted, so 16384 ranks cost n log n comparisons. */
static usp_status check_distinct_hosts(const char *path, char **hosts, int world) {
    named_rank *sorted = malloc((size_t)world * sizeof *sorted);
    if (!sorted) return usp_fail(USP_EINTERNAL, "out of memory reading %s", path);
    for (int g = 0; g < world; g++) sorted[g] = (named_rank){hosts[g], g};
    qsort(sorted, (size_t)world, sizeof *sorted, cmp_named_ranks);
    usp_status st = USP_OK;
    for (int i = 1; i < world && st == USP_OK; i++)
        if (!strcmp(sorted[i].name, sorted[i - 1].name))
            st = usp_fail(USP_EINVAL, "host map %s: ranks %d and %d are both on host '%s' (one rank per GPU)",
                          path, sorted[i - 1].rank, sorted[i].rank, sorted[i].name);
    free(sorted);
    return st;
}

/* One host name per line, line i for rank i; blank lines and '#' comments skipped. */
static usp_status read_hostmap(const char *path, int world, char ***out) {
    FILE *f = fopen(path, "r");
    if (!f) return usp_fail(USP_EINVAL, "host map %s: %s", path, strerror(errno));
    char **hosts = calloc((size_t)world, sizeof *hosts), line[512];
    int n = 0, oom = !hosts;
    while (!oom && n < world && fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        p[strcspn(p, " \t\r\n#")] = '\0';
        if (!*p) continue;
        oom = !(hosts[n++] = strdup(p));
    }
    fclose(f);
    if (oom) { free_hosts(hosts, n); return usp_fail(USP_EINTERNAL, "out of memory reading %s", path); }
    if (n < world) {
        free_hosts(hosts, n);
        return usp_fail(USP_EINVAL, "host map %s names %d hosts, fewer than the %d ranks", path, n, world);
    }
    usp_status st = check_distinct_hosts(path, hosts, world);
    if (st != USP_OK) { free_hosts(hosts, world); return st; }
    *out = hosts;
    return USP_OK;
}

/* ------------------------------------------------------------ the call */

static usp_status check_request(const usp_schedule *s, const usp_inputs *in, const usp_sim_options *o,
                                const usp_result *out) {
    if (!s || !out || !out->ranks || out->world != s->world)
        return usp_fail(USP_EINTERNAL, "usp_sim_execute: the result is not set up for this schedule");
    if (o->numerics && (!in || !out->o || !out->lse || (s->backward && (!out->dq || !out->dk || !out->dv))))
        return usp_fail(USP_EINTERNAL, "usp_sim_execute: numerics needs the inputs and a result with outputs");
    if (o->ncfg < 0 || o->ncfg > USP_SIM_MAX_CFG)
        return usp_fail(USP_EINVAL, "at most %d SimGrid settings", USP_SIM_MAX_CFG);
    for (int i = 0; i < o->ncfg; i++)
        if (!o->cfg_overrides[i] || !strchr(o->cfg_overrides[i], ':'))
            return usp_fail(USP_EINVAL, "SimGrid setting '%s' is not name:value",
                            o->cfg_overrides[i] ? o->cfg_overrides[i] : "");
    return USP_OK;
}

usp_status usp_sim_check_options(const usp_sim_options *o, const usp_config *c) {
    static const usp_sim_options defaults = {0};
    if (!o) o = &defaults;
    sim_profile prof;
    USP_TRY(sim_profile_load(sim_profile_for(o), &prof));
    USP_TRY(sim_profile_supports(&prof, c));
    const char *spec = o->platform ? o->platform : "h200x8";
    if (!usp_platform_is_preset(spec)) USP_TRY(check_platform_file(spec));
    if (!o->hostmap) return USP_OK;
    char **hosts = NULL;
    USP_TRY(read_hostmap(o->hostmap, usp_world(c), &hosts));
    free_hosts(hosts, usp_world(c));
    return USP_OK;
}

usp_status usp_sim_execute(const usp_schedule *s, const usp_inputs *in, const usp_sim_options *o,
                           usp_result *out, usp_trace *trace) {
    static const usp_sim_options defaults = {0};
    if (!o) o = &defaults;
    USP_TRY(check_request(s, in, o, out));
    sim_profile prof;
    USP_TRY(sim_profile_load(sim_profile_for(o), &prof));
    USP_TRY(sim_profile_supports(&prof, &s->cfg));
    const char *spec = o->platform ? o->platform : "h200x8";
    char path[4096];
    int temp = usp_platform_is_preset(spec);
    if (temp) USP_TRY(sim_write_preset(spec, s->world, "usp-platform", path, sizeof path));
    else { USP_TRY(check_platform_file(spec)); snprintf(path, sizeof path, "%s", spec); }
    char **hosts = NULL;
    usp_status st = o->hostmap ? read_hostmap(o->hostmap, s->world, &hosts) : USP_OK;
    sim_job job = {s, o->numerics ? in : NULL, out, &prof, path, hosts, o, trace != NULL, o->no_fold,
                   "--no-fold"};
    if (st == USP_OK) st = run_sim(&job, out, trace);
    if (st == USP_OK) usp_result_count_schedule(out, s);
    free_hosts(hosts, s->world);
    if (temp) unlink(path);
    return st;
}
