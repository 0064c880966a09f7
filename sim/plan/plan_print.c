/* plan_print.c: the plan and the costs table, readable and as JSON.
 * Sizes are decimal (1 GB = 1e9 bytes), as the device profiles give memory. */
#include "plan_internal.h"

#include <string.h>
#include "usp/json.h"

static const char *human(double bytes, char *buf, size_t n) {
    static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (bytes >= 1000 && u < 4) { bytes /= 1000; u++; }
    snprintf(buf, n, u ? "%.3g %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

static void print_header(FILE *f, const usp_plan *p) {
    const usp_model *m = &p->work.model;
    const usp_workload *w = &p->work;
    fprintf(f, "model     %s: %d layers, hidden %d, %d heads (%d K/V) of %d, ffn %d (%s), vocab %d, %.3g B parameters\n",
            m->name, m->layers, m->hidden, m->heads, m->kv_heads, m->head_dim, m->ffn, m->gated_mlp ? "SwiGLU" : "GELU",
            m->vocab, usp_model_params(m) / 1e9);
    char micro[96] = "";
    if (w->micro_batch > 0)
        snprintf(micro, sizeof micro, " (micro-batches of %d per DP rank, gradients accumulated)", w->micro_batch);
    fprintf(f, "workload  seq %d x global batch %d%s, %s, %s, ring %s%s%s\n", w->seq, w->global_batch, micro,
            w->mask ? usp_mask_describe(w->mask) : w->causal ? "causal" : "non-causal", usp_dtype_name(w->dtype),
            usp_ring_impl_name(w->ring_impl), w->grad_fp32 ? ", fp32 gradients" : "",
            w->grad_sync_step ? ", gradients and parameters synchronized once per step (not overlapped)" : "");
    fprintf(f,
            "cluster   %d GPUs on %s: %s, peak %.0f TFLOP/s, matrix products at %.0f TFLOP/s, %.1f GB (%.1f GB "
            "usable)\n",
            p->gpus, p->platform, p->gpu, p->peak_flops / 1e12, p->matmul_flops / 1e12, p->capacity_bytes / 1e9,
            p->usable_bytes / 1e9);
    fprintf(f, "FLOPs     %.3g PFLOP per step (linear %.3g, attention %.3g), model FLOPs without recomputation\n\n",
            p->flops.total / 1e15, p->flops.linear / 1e15, p->flops.attention / 1e15);
}

/* Where published runs put the model of the platform far off for this mix's
 * all-to-alls or rings (usp_platform_caveat_groups; TP innermost, then ulysses,
 * ring, dp: plan_rank_of). */
static const char *mix_caveat(const usp_plan *p, const usp_mix *x) {
    const usp_platform_group a2a = {x->ulysses, x->tp}, ring = {x->ring, x->tp * x->ulysses};
    return usp_platform_caveat_groups(p->platform, p->gpus, &a2a, &ring);
}

static void print_row(FILE *f, int rank, const usp_plan_point *pt, const char *caveat) {
    const usp_mix *x = &pt->mix;
    fprintf(f, "%4d  %3d %3d %3d %4d %4d %3s %9.3f %9.1f %6.1f%% %8.1f%s %7.0f%%%s\n", rank, x->dp, x->tp,
            x->ulysses, x->ring, x->zero, x->recompute ? "yes" : "-", pt->step_s, pt->tflops_per_gpu, 100 * pt->mfu,
            pt->mem.total / 1e9, pt->oom ? " OOM" : "    ", 100 * pt->exposed_s / pt->step_s, caveat ? " *" : "");
}

static int same_degrees(const usp_mix *a, const usp_mix *b) {
    return a->dp == b->dp && a->tp == b->tp && a->ulysses == b->ulysses && a->ring == b->ring;
}

/* With `distinct`, only the first (best) point of each dp x tp x ulysses x ring. */
static int shown_point(const usp_plan *p, int i, int distinct) {
    if (p->points[i].status != USP_OK || p->points[i].pruned) return 0;
    for (int j = 0; distinct && j < i; j++)
        if (same_degrees(&p->points[j].mix, &p->points[i].mix)) return 0;
    return 1;
}

/* Refused mixes differ only in ZeRO stage and recomputation, and share the
 * reason: one line per dp x tp x ulysses x ring. */
static int first_refusal(const usp_plan *p, int i) {
    if (p->points[i].status == USP_OK) return 0;
    for (int j = 0; j < i; j++)
        if (p->points[j].status != USP_OK && same_degrees(&p->points[j].mix, &p->points[i].mix)) return 0;
    return 1;
}

static void print_refused(FILE *f, const usp_plan *p, int list) {
    int n = 0;
    for (int i = 0; i < p->count; i++) n += first_refusal(p, i);
    if (!n) return;
    if (!list) { fprintf(f, "%d dp x tp x ulysses x ring refused (--all lists them with the reason)\n", n); return; }
    fprintf(f, "\nrefused:\n");
    for (int i = 0; i < p->count; i++) {
        if (!first_refusal(p, i)) continue;
        const usp_mix *x = &p->points[i].mix;
        fprintf(f, "  dp%d tp%d u%d r%d%*s %s\n", x->dp, x->tp, x->ulysses, x->ring, 2, "", p->points[i].why);
    }
}

void usp_plan_print(FILE *f, const usp_plan *p, int top, int refused, int distinct) {
    print_header(f, p);
    fprintf(f, "rank   dp  tp uly ring zero  rc    step s TFLOP/s/GPU   MFU   mem GB        exposed\n");
    int shown = 0, candidates = 0;
    const char *caveat = NULL;
    for (int i = 0; i < p->count; i++) {
        if (!shown_point(p, i, distinct)) continue;
        candidates++;
        if (top > 0 && shown >= top) continue;
        const char *c = mix_caveat(p, &p->points[i].mix);
        print_row(f, i + 1, &p->points[i], c);
        if (!caveat) caveat = c;
        shown++;
    }
    if (shown < candidates) fprintf(f, "... %d more (--top 0 shows all)\n", candidates - shown);
    if (p->pruned)
        fprintf(f, "%d mixes not simulated: over memory, or a lower bound on their step is slower than the %d best "
                   "(--top 0 simulates all)\n", p->pruned, top);
    if (caveat) usp_caveat_print(f, "* ", "this platform", caveat);
    print_refused(f, p, refused);
}

/* ------------------------------------------------------------------ JSON */

static void json_num(FILE *f, const char *key, double v, int comma) {
    fprintf(f, "\"%s\": ", key);
    usp_json_write_number(f, v);
    if (comma) fputs(", ", f);
}

/* "mix": the parallel configuration only (sim/plan/README.md, "JSON"). */
static void json_mix(FILE *f, const usp_mix *x) {
    fprintf(f,
            "\"mix\": {\"dp\": %d, \"tp\": %d, \"ulysses\": %d, \"ring\": %d, \"zero\": %d, \"recompute\": %s, "
            "\"tp_sp\": %s, \"tp_overlap\": %s}",
            x->dp, x->tp, x->ulysses, x->ring, x->zero, x->recompute ? "true" : "false", x->tp_sp ? "true" : "false",
            x->tp_overlap ? "true" : "false");
}

static void json_memory(FILE *f, const usp_memory *m) {
    fputs("{", f);
    json_num(f, "params", m->params, 1);
    json_num(f, "grads", m->grads, 1);
    json_num(f, "optimizer", m->optimizer, 1);
    json_num(f, "activations", m->activations, 1);
    json_num(f, "layer_saved", m->layer_saved, 1);
    json_num(f, "working", m->working, 1);
    json_num(f, "total", m->total, 0);
    fputs("}", f);
}

static void json_terms(FILE *f, const double *bytes) {
    fputs("{", f);
    for (int t = 0; t < USP_TERM_COUNT; t++) {
        usp_json_write_string(f, usp_comm_term_name((usp_comm_term)t));
        fputs(": ", f);
        usp_json_write_number(f, bytes[t]);
        if (t + 1 < USP_TERM_COUNT) fputs(", ", f);
    }
    fputs("}", f);
}

/* The members of one ranked mix after "rank": its mix, then its time and
 * memory beside it. */
static void json_point(FILE *f, const usp_plan_point *pt) {
    json_mix(f, &pt->mix);
    fputs(", ", f);
    json_num(f, "step_s", pt->step_s, 1);
    json_num(f, "layer_fwd_s", pt->layer_fwd_s, 1);
    json_num(f, "layer_bwd_s", pt->layer_bwd_s, 1);
    json_num(f, "edges_s", pt->edges_s, 1);
    json_num(f, "compute_s", pt->compute_s, 1);
    json_num(f, "exposed_s", pt->exposed_s, 1);
    json_num(f, "tflops_per_gpu", pt->tflops_per_gpu, 1);
    json_num(f, "mfu", pt->mfu, 1);
    fprintf(f, "\"micro_batch\": %d, \"accumulation_steps\": %d, ", pt->micro_batch, pt->accumulation_steps);
    fprintf(f, "\"oom\": %s, \"memory_bytes\": ", pt->oom ? "true" : "false");
    json_memory(f, &pt->mem);
}

static void json_header(FILE *f, const usp_plan *p) {
    const usp_model *m = &p->work.model;
    fputs("{\"model\": {\"name\": ", f);
    usp_json_write_string(f, m->name);
    fprintf(f, ", \"layers\": %d, \"hidden\": %d, \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, \"ffn\": %d, "
               "\"vocab\": %d, \"mlp\": \"%s\", \"tied_embeddings\": %s, ",
            m->layers, m->hidden, m->heads, m->kv_heads, m->head_dim, m->ffn, m->vocab, m->gated_mlp ? "swiglu" : "gelu",
            m->tied_embeddings ? "true" : "false");
    json_num(f, "params", usp_model_params(m), 0);
    fprintf(f, "}, \"seq\": %d, \"global_batch\": %d, \"causal\": %s, \"dtype\": \"%s\", \"ring_impl\": \"%s\", "
               "\"micro_batch\": %d, \"grad_sync\": \"%s\", \"grad_dtype\": \"%s\", \"platform\": ",
            p->work.seq, p->work.global_batch, p->work.causal ? "true" : "false", usp_dtype_name(p->work.dtype),
            usp_ring_impl_name(p->work.ring_impl), p->work.micro_batch, p->work.grad_sync_step ? "step" : "layer",
            p->work.grad_fp32 ? "fp32" : usp_dtype_name(p->work.dtype));
    usp_json_write_string(f, p->platform);
    if (p->work.mask) {
        fputs(", \"mask\": ", f);
        usp_json_write_string(f, usp_mask_describe(p->work.mask));
    }
    fputs(", \"gpu\": ", f);
    usp_json_write_string(f, p->gpu);
    fprintf(f, ", \"gpus\": %d, ", p->gpus);
    json_num(f, "peak_tflops", p->peak_flops / 1e12, 1);
    json_num(f, "matmul_tflops", p->matmul_flops / 1e12, 1);
    json_num(f, "capacity_bytes", p->capacity_bytes, 1);
    json_num(f, "usable_bytes", p->usable_bytes, 1);
    fputs("\"model_flops_per_step\": {", f);
    json_num(f, "linear", p->flops.linear, 1);
    json_num(f, "attention", p->flops.attention, 1);
    json_num(f, "total", p->flops.total, 0);
    fputs("}", f);
}

static void explain_json(FILE *f, const usp_plan *p, int index);

void usp_plan_print_json(FILE *f, const usp_plan *p, int top, int refused, int distinct, int explain) {
    json_header(f, p);
    fputs(", \"mixes\": [", f);
    int shown = 0;
    const char *caveat = NULL;
    for (int i = 0; i < p->count; i++) {
        if (!shown_point(p, i, distinct) || (top > 0 && shown >= top)) continue;
        fputs(shown ? ",\n  " : "\n  ", f);
        fprintf(f, "{\"rank\": %d, ", i + 1);
        json_point(f, &p->points[i]);
        const char *c = mix_caveat(p, &p->points[i].mix);
        fprintf(f, ", \"caveat\": %s}", c ? "true" : "false");
        if (!caveat) caveat = c;
        shown++;
    }
    fputs("], \"caveat\": ", f);
    if (caveat) usp_json_write_string(f, caveat);
    else fputs("null", f);
    if (p->pruned) fprintf(f, ", \"not_simulated\": %d", p->pruned);
    if (refused) {
        fputs(", \"refused\": [", f);
        int n = 0;
        for (int i = 0; i < p->count; i++) {
            if (!first_refusal(p, i)) continue;
            fputs(n++ ? ",\n  {" : "\n  {", f);
            json_mix(f, &p->points[i].mix);
            fputs(", \"why\": ", f);
            usp_json_write_string(f, p->points[i].why);
            fputs("}", f);
        }
        fputs("]", f);
    }
    if (explain >= 0) {
        fputs(",\n\"explain\": ", f);
        explain_json(f, p, explain);
    }
    fputs("}\n", f);
}

/* -------------------------------------------------------------- explain */

static void explain_time(FILE *f, const usp_plan *p, const usp_plan_point *pt) {
    if (pt->accumulation_steps > 1)
        fprintf(f, "micro-batches  %d of %d sequences per DP rank: %d accumulating (no optimizer%s), then the last "
                   "one below\n",
                pt->accumulation_steps, pt->micro_batch, pt->accumulation_steps - 1,
                pt->mix.zero >= 2 ? "; ZeRO-2/3 reduce every micro-batch's gradients" : ", no gradient reduction");
    fprintf(f, "time per step  %.4g s = %s%d layers x (forward %.4g + backward %.4g s) + embedding, LM head, "
               "unhidden collectives and optimizer %.4g s\n",
            pt->step_s, pt->accumulation_steps > 1 ? "the accumulating micro-batches + " : "", p->work.model.layers,
            pt->layer_fwd_s, pt->layer_bwd_s, pt->edges_s);
    fprintf(f, "               compute %.4g s; the GPU waits for communication %.4g s (%.1f%%)\n", pt->compute_s,
            pt->exposed_s, 100 * pt->exposed_s / pt->step_s);
    fprintf(f, "throughput     %.1f TFLOP/s per GPU, MFU %.1f%% of %.0f TFLOP/s\n\n", pt->tflops_per_gpu,
            100 * pt->mfu, p->peak_flops / 1e12);
}

static void explain_comm(FILE *f, const usp_plan *p, const usp_plan_point *pt) {
    usp_comm_bytes cf;
    usp_comm_closed_form(&p->work, &pt->mix, &cf);
    char a[32], b[32], c[32], d[32];
    fprintf(f, "communication per GPU, bytes sent   per layer   edges/step    per step   simulated/step%s\n",
            pt->accumulation_steps > 1 ? "  (per layer, edges: the last micro-batch)" : "");
    for (int t = 0; t < USP_TERM_COUNT; t++)
        fprintf(f, "  %-28s %12s %12s %11s %12s\n", usp_comm_term_name((usp_comm_term)t), human(cf.layer[t], a, 32),
                human(cf.edges[t], b, 32), human(cf.step[t], c, 32), human(pt->simulated.step[t], d, 32));
    fputc('\n', f);
}

static void explain_memory(FILE *f, const usp_plan *p, const usp_plan_point *pt) {
    const usp_memory *m = &pt->mem;
    char a[32], b[32];
    fprintf(f, "memory per GPU\n");
    fprintf(f, "  parameters (%s)              %12s%s\n", usp_dtype_name(p->work.dtype), human(m->params, a, 32),
            pt->mix.zero >= 3 ? "  sharded by ZeRO-3" : "");
    fprintf(f, "  gradients (%s)               %12s%s\n", p->work.grad_fp32 ? "fp32" : usp_dtype_name(p->work.dtype),
            human(m->grads, a, 32), pt->mix.zero >= 2 ? "  sharded by ZeRO-2/3" : "");
    fprintf(f, "  optimizer states (12 B/param)  %12s%s\n", human(m->optimizer, a, 32),
            pt->mix.zero >= 1 ? "  sharded by ZeRO" : "");
    fprintf(f, "  activations                    %12s  %d layers x %s%s\n", human(m->activations, a, 32),
            p->work.model.layers, pt->mix.recompute ? "the layer input" : human(m->layer_saved, b, 32),
            pt->mix.recompute ? " (recomputed)" : "");
    fprintf(f, "  working set (largest transient)%12s\n", human(m->working, a, 32));
    char c[32];
    fprintf(f, "  total                          %12s of %s usable (%.0f%% of %s: CUDA context, NCCL, allocator)%s\n",
            human(m->total, a, 32), human(p->usable_bytes, b, 32), 100 * USP_MEMORY_USABLE_FRACTION,
            human(p->capacity_bytes, c, 32), pt->oom ? ": OUT OF MEMORY" : "");
}

static const usp_plan_point *point_at(const usp_plan *p, int index) {
    if (index < 0 || index >= p->count || p->points[index].status != USP_OK) return NULL;
    return &p->points[index];
}

void usp_plan_explain(FILE *f, const usp_plan *p, int index) {
    const usp_plan_point *pt = point_at(p, index);
    if (!pt) return;
    char name[64];
    usp_mix_describe(&pt->mix, name, sizeof name);
    fprintf(f, "\nmix %d: %s (dp x tp x ulysses x ring, ZeRO over the %d GPUs of each TP shard)\n", index + 1, name,
            usp_mix_zero_group(&pt->mix));
    explain_time(f, p, pt);
    explain_comm(f, p, pt);
    explain_memory(f, p, pt);
}

static void explain_json(FILE *f, const usp_plan *p, int index) {
    const usp_plan_point *pt = point_at(p, index);
    if (!pt) { fputs("null", f); return; }
    usp_comm_bytes cf;
    usp_comm_closed_form(&p->work, &pt->mix, &cf);
    fprintf(f, "{\"rank\": %d, ", index + 1);
    json_point(f, pt);
    fputs(", \"bytes_per_layer\": ", f);
    json_terms(f, cf.layer);
    fputs(", \"bytes_edges\": ", f);
    json_terms(f, cf.edges);
    fputs(", \"bytes_accumulating_micro_batch\": ", f);
    json_terms(f, cf.accum);
    fputs(", \"bytes_per_step\": ", f);
    json_terms(f, cf.step);
    fputs(", \"simulated_bytes_per_step\": ", f);
    json_terms(f, pt->simulated.step);
    fputs("}", f);
}

/* ------------------------------------------------------------ the costs */

void usp_costs_print(FILE *f, const usp_workload *w, int degree, const usp_cost *rows, const usp_status *row_status,
                     char why[][200]) {
    const usp_model *m = &w->model;
    char a[5][32];
    fprintf(f, "%s: hidden %d, %d heads (%d K/V) of %d, ffn %d; seq %d, batch %d, %s; degree N = %d\n", m->name,
            m->hidden, m->heads, m->kv_heads, m->head_dim, m->ffn, w->seq, w->global_batch, usp_dtype_name(w->dtype),
            degree);
    fprintf(f, "bytes per GPU per transformer layer, forward + backward (the USP paper's Table 2, exact)\n\n");
    fprintf(f, "%-11s %-10s %-30s %11s %-33s %11s %10s %10s %10s\n", "", "split", "param/grad comm", "bytes",
            "activation comm", "bytes", "P+G", "OS", "act");
    for (int r = 0; r < USP_COST_ROWS; r++) {
        const usp_cost *c = &rows[r];
        char label[32];
        snprintf(label, sizeof label, "%s", c->name);
        if (r == USP_COST_USP) snprintf(label, sizeof label, "USP %dx%d", c->mix.ulysses, c->mix.ring);
        if (row_status[r] != USP_OK) { fprintf(f, "%-11s refused: %s\n", label, why[r]); continue; }
        fprintf(f, "%-11s %-10s %-30s %11s %-33s %11s %10s %10s %10s\n", label, c->split, c->param_ops,
                human(c->param_bytes, a[0], 32), c->act_ops, human(c->act_bytes, a[1], 32), human(c->pg_bytes, a[2], 32),
                human(c->os_bytes, a[3], 32), human(c->act_mem_bytes, a[4], 32));
    }
    fprintf(f, "\nCollectives cost (n-1)/n of the gathered tensor (all-gather, reduce-scatter), twice that\n"
               "(all-reduce), (n-1)/n of the local tensor (all-to-all). Parameter/gradient traffic is over the\n"
               "dp x ulysses x ring GPUs of a TP shard. Attention bytes are the USP schedule's: the all-to-alls\n"
               "carry O, dQ, dK, dV in the run's dtype (the default wire) and LSE in fp32, the ring's dK/dV\n"
               "accumulators travel in fp32. TP-sp also gathers each saved input again for the weight\n"
               "gradients, as Megatron-LM does. P+G: parameters and gradients; OS: optimizer states (12 B per\n"
               "parameter); act: what one layer keeps for its backward.\n");
}

void usp_costs_print_json(FILE *f, const usp_workload *w, int degree, const usp_cost *rows,
                          const usp_status *row_status, char why[][200]) {
    fputs("{\"model\": ", f);
    usp_json_write_string(f, w->model.name);
    fprintf(f, ", \"seq\": %d, \"batch\": %d, \"dtype\": \"%s\", \"degree\": %d, \"rows\": [", w->seq, w->global_batch,
            usp_dtype_name(w->dtype), degree);
    for (int r = 0; r < USP_COST_ROWS; r++) {
        const usp_cost *c = &rows[r];
        fputs(r ? ",\n  {\"name\": " : "\n  {\"name\": ", f);
        usp_json_write_string(f, c->name);
        fputs(", ", f);
        json_mix(f, &c->mix);
        if (row_status[r] != USP_OK) {
            fputs(", \"refused\": ", f);
            usp_json_write_string(f, why[r]);
            fputs("}", f);
            continue;
        }
        fputs(", \"split\": ", f);
        usp_json_write_string(f, c->split);
        fputs(", \"param_ops\": ", f);
        usp_json_write_string(f, c->param_ops);
        fputs(", \"act_ops\": ", f);
        usp_json_write_string(f, c->act_ops);
        fputs(", ", f);
        json_num(f, "param_bytes", c->param_bytes, 1);
        json_num(f, "act_bytes", c->act_bytes, 1);
        json_num(f, "pg_bytes", c->pg_bytes, 1);
        json_num(f, "os_bytes", c->os_bytes, 1);
        json_num(f, "act_mem_bytes", c->act_mem_bytes, 0);
        fputs("}", f);
    }
    fputs("]}\n", f);
}
