/* report.c: the simulator's part of a run summary: efficiency and memory. */
#include "internal.h"

#include <string.h>
#include "usp/json.h"

usp_status usp_sim_report_make(const usp_schedule *s, const usp_result *r, const usp_sim_options *o,
                               usp_sim_report *rep) {
    sim_profile prof;
    USP_TRY(sim_profile_load(sim_profile_for(o), &prof));
    memset(rep, 0, sizeof *rep);
    snprintf(rep->platform, sizeof rep->platform, "%s", o && o->platform ? o->platform : "h200x8");
    snprintf(rep->gpu, sizeof rep->gpu, "%s", prof.name);
    snprintf(rep->profile, sizeof rep->profile, "%s", sim_profile_for(o));
    snprintf(rep->kernel, sizeof rep->kernel, "%s", prof.kernel);
    rep->numerics = o ? o->numerics : 0;
    rep->time_fwd_s = r->time_fwd_s;
    rep->time_bwd_s = r->time_bwd_s;
    rep->time_total_s = r->time_fwd_s + r->time_bwd_s;
    rep->capacity_bytes = prof.capacity_bytes;
    rep->usable_bytes = prof.usable_bytes;
    rep->peak_dense_tflops = prof.peak_flops[s->cfg.dtype] / 1e12;
    double flops = 0, exposed = 0;
    for (int g = 0; g < r->world; g++) {
        const usp_rank_stats *st = &r->ranks[g];
        flops += st->flops;
        exposed += st->exposed_comm_s;
        if (st->compute_s > rep->compute_s_max) rep->compute_s_max = st->compute_s;
        if (st->comm_s > rep->comm_s_max) rep->comm_s_max = st->comm_s;
        if (st->exposed_comm_s > rep->exposed_comm_s_max) rep->exposed_comm_s_max = st->exposed_comm_s;
        if (st->peak_bytes > rep->peak_bytes_max) { rep->peak_bytes_max = st->peak_bytes; rep->peak_rank = g; }
    }
    rep->flops_per_gpu = r->world ? flops / r->world : 0;
    rep->exposed_comm_s_mean = r->world ? exposed / r->world : 0;
    if (rep->time_total_s > 0) rep->tflops_per_gpu = rep->flops_per_gpu / rep->time_total_s / 1e12;
    if (rep->peak_dense_tflops > 0) rep->mfu = rep->tflops_per_gpu / rep->peak_dense_tflops;
    rep->oom = rep->peak_bytes_max > rep->usable_bytes;
    rep->world = r->world;
    rep->ulysses = s->cfg.ulysses;
    rep->ranks_simulated = r->sim_ranks_simulated > 0 ? r->sim_ranks_simulated : r->world;
    const char *caveat = sim_caveat_for(o, &s->cfg);
    if (caveat) snprintf(rep->caveat, sizeof rep->caveat, "%s", caveat);
    if (!rep->numerics && rep->ulysses > 1 && rep->ranks_simulated == rep->world)
        snprintf(rep->not_folded, sizeof rep->not_folded, "%s", r->sim_mode);
    return USP_OK;
}

void usp_sim_report_print(FILE *f, const usp_sim_report *rep) {
    const double GiB = 1024.0 * 1024 * 1024;
    fprintf(f, "simulated on %s, %s (%s)\n", rep->platform, rep->gpu,
            rep->numerics ? "numerics on" : "timing only");
    if (rep->ranks_simulated < rep->world)
        fprintf(f, "  folded           %d of %d ranks simulated, one per ulysses group of %d: the others run "
                   "the same steps on like links (exact; --no-fold simulates all)\n",
                rep->ranks_simulated, rep->world, rep->ulysses);
    else if (rep->not_folded[0])
        fprintf(f, "  not folded       %s\n", rep->not_folded);
    fprintf(f, "  kernel rates     profile %s%s%s\n", rep->profile, rep->kernel[0] ? ": " : "", rep->kernel);
    fprintf(f, "  predicted time   fwd %.3f ms  bwd %.3f ms  total %.3f ms\n", rep->time_fwd_s * 1e3,
            rep->time_bwd_s * 1e3, rep->time_total_s * 1e3);
    fprintf(f, "  per GPU          %.1f TFLOP/s, MFU %.1f%% of %.0f TFLOP/s peak\n", rep->tflops_per_gpu,
            rep->mfu * 100, rep->peak_dense_tflops);
    fprintf(f, "  busiest rank     compute %.3f ms  comm %.3f ms  exposed comm %.3f ms (mean %.3f ms)\n",
            rep->compute_s_max * 1e3, rep->comm_s_max * 1e3, rep->exposed_comm_s_max * 1e3,
            rep->exposed_comm_s_mean * 1e3);
    fprintf(f, "  peak activations %.2f GiB on rank %d of %.1f GiB usable (%.0f%% of %.1f GiB): %s\n",
            rep->peak_bytes_max / GiB, rep->peak_rank, rep->usable_bytes / GiB, 100 * USP_MEMORY_USABLE_FRACTION,
            rep->capacity_bytes / GiB, rep->oom ? "OUT OF MEMORY" : "fits");
    if (rep->caveat[0]) usp_caveat_print(f, "  caveat           ", rep->platform, rep->caveat);
}

const char *sim_caveat_for(const usp_sim_options *o, const usp_config *c) {
    if (o && o->hostmap) return NULL;   /* its ranks are not on the hosts in order */
    return usp_platform_caveat(o && o->platform ? o->platform : "h200x8", c);
}

/* prefix, then text in lines of at most 100 columns (a longer word alone), the
 * lines after the first indented as wide as the prefix. */
static void print_wrapped(FILE *f, const char *prefix, const char *text) {
    enum { WIDTH = 100 };
    const int indent = (int)strlen(prefix);
    fputs(prefix, f);
    int col = indent;
    for (const char *w = text; *w;) {
        while (*w == ' ') w++;
        const int len = (int)strcspn(w, " ");
        if (!len) break;
        if (col > indent && col + 1 + len > WIDTH) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fwrite(w, 1, (size_t)len, f);
        col += len;
        w += len;
    }
    fputc('\n', f);
}

void usp_caveat_print(FILE *f, const char *prefix, const char *platform, const char *caveat) {
    char line[800];
    snprintf(line, sizeof line, "on %s, %s", platform, caveat);
    print_wrapped(f, prefix, line);
}

static void member(FILE *f, const char *key, double v, int last) {
    usp_json_write_string(f, key);
    fputs(": ", f);
    usp_json_write_number(f, v);
    if (!last) fputs(", ", f);
}

void usp_sim_report_json(FILE *f, const usp_sim_report *rep) {
    fputs("{\"platform\": ", f);
    usp_json_write_string(f, rep->platform);
    fputs(", \"gpu\": ", f);
    usp_json_write_string(f, rep->gpu);
    fputs(", \"profile\": ", f);
    usp_json_write_string(f, rep->profile);
    fputs(", \"kernel\": ", f);
    usp_json_write_string(f, rep->kernel);
    fprintf(f, ", \"numerics\": %s, \"oom\": %s, ", rep->numerics ? "true" : "false", rep->oom ? "true" : "false");
    member(f, "time_fwd_s", rep->time_fwd_s, 0);
    member(f, "time_bwd_s", rep->time_bwd_s, 0);
    member(f, "time_total_s", rep->time_total_s, 0);
    member(f, "flops_per_gpu", rep->flops_per_gpu, 0);
    member(f, "tflops_per_gpu", rep->tflops_per_gpu, 0);
    member(f, "peak_dense_tflops", rep->peak_dense_tflops, 0);
    member(f, "mfu", rep->mfu, 0);
    member(f, "compute_s_max", rep->compute_s_max, 0);
    member(f, "comm_s_max", rep->comm_s_max, 0);
    member(f, "exposed_comm_s_max", rep->exposed_comm_s_max, 0);
    member(f, "exposed_comm_s_mean", rep->exposed_comm_s_mean, 0);
    member(f, "peak_bytes", rep->peak_bytes_max, 0);
    member(f, "peak_rank", rep->peak_rank, 0);
    member(f, "capacity_bytes", rep->capacity_bytes, 0);
    member(f, "usable_bytes", rep->usable_bytes, 0);
    member(f, "ranks_simulated", rep->ranks_simulated, 0);
    fputs("\"caveat\": ", f);
    if (rep->caveat[0]) usp_json_write_string(f, rep->caveat);
    else fputs("null", f);
    fputc('}', f);
}
