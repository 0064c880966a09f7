/* plan_costs.c: mixes, their dimensions, and the closed forms of the bytes
 * each GPU sends, the memory it holds and the model FLOPs.
 *
 * Conventions (the USP paper's, arXiv 2405.07719, made exact): bytes are
 * what one GPU puts on links; a collective among n GPUs on a tensor of X
 * bytes per GPU after gathering costs (n-1)/n X for all-gather and
 * reduce-scatter, 2 (n-1)/n X for all-reduce; an all-to-all sends (n-1)/n of
 * the local tensor. Parameters and gradients are `dtype` (2 bytes in bf16),
 * optimizer states 12 bytes per parameter. The attention's bytes are the USP
 * schedule's: Q, K, V, dO in the data dtype; O, dQ, dK, dV in its fp32
 * accumulators; LSE in fp32. */
#include "plan_internal.h"

#include <math.h>
#include <string.h>

usp_workload usp_workload_default(void) {
    usp_workload w;
    memset(&w, 0, sizeof w);
    usp_model_load("llama3-8b", &w.model);
    w.seq = 65536;
    w.global_batch = 1;
    w.causal = 1;
    w.dtype = USP_BF16;
    w.ring_impl = USP_RING_ZIGZAG;
    return w;
}

/* ------------------------------------------------------------------ mixes */

void usp_mix_describe(const usp_mix *x, char *buf, size_t n) {
    snprintf(buf, n, "dp%d tp%d u%d r%d zero%d%s%s%s", x->dp, x->tp, x->ulysses, x->ring, x->zero,
             x->recompute ? " rc" : "", x->tp_sp ? "" : " tp-nosp", x->tp_overlap && x->tp > 1 ? " tp-overlap" : "");
}

/* Ring 1 has no ring: the token layout of a balanced ring is not needed. */
usp_config plan_attention_config(const usp_workload *w, const usp_mix *x) {
    usp_config c = usp_config_default();
    c.batch = usp_micro_batch(w, x);
    if (c.batch < 1) c.batch = 1;
    c.seq = w->seq;
    c.heads = w->model.heads / (x->tp > 0 ? x->tp : 1);
    c.kv_heads = w->model.kv_heads / (x->tp > 0 ? x->tp : 1);
    c.head_dim = w->model.head_dim;
    c.causal = w->causal;
    c.mask = w->mask;
    c.dtype = w->dtype;
    c.ulysses = x->ulysses;
    c.ring = x->ring;
    c.ring_impl = x->ring > 1 ? w->ring_impl : USP_RING_BASIC;
    c.layout = USP_LAYOUT_ULYSSES_INNER;
    return c;
}

static usp_status check_degrees(const usp_mix *x, int gpus) {
    if (x->dp < 1 || x->tp < 1 || x->ulysses < 1 || x->ring < 1)
        return usp_fail(USP_EINVAL, "degrees must be >= 1 (dp %d, tp %d, ulysses %d, ring %d)", x->dp, x->tp,
                        x->ulysses, x->ring);
    if (x->zero < 0 || x->zero > 3) return usp_fail(USP_EINVAL, "ZeRO stage %d is not 0..3", x->zero);
    if (gpus > 0 && usp_mix_gpus(x) != gpus)
        return usp_fail(USP_EINVAL, "%d GPUs are not dp x tp x ulysses x ring = %d x %d x %d x %d = %d", gpus,
                        x->dp, x->tp, x->ulysses, x->ring, usp_mix_gpus(x));
    return USP_OK;
}

static usp_status check_shapes(const usp_workload *w, const usp_mix *x) {
    const usp_model *m = &w->model;
    if (w->global_batch % x->dp != 0)
        return usp_fail(USP_EINVAL, "global batch %d is not divisible by dp %d", w->global_batch, x->dp);
    if (w->micro_batch < 0) return usp_fail(USP_EINVAL, "micro-batch %d must be >= 1", w->micro_batch);
    if (w->micro_batch > 0 && w->global_batch % (x->dp * w->micro_batch) != 0)
        return usp_fail(USP_EINVAL, "global batch %d is not divisible by dp x micro-batch = %d x %d = %d",
                        w->global_batch, x->dp, w->micro_batch, x->dp * w->micro_batch);
    /* ulysses may split a TP shard's heads unevenly (usp/layout.h), not to nothing */
    if (m->heads % x->tp != 0)
        return usp_fail(USP_EINVAL, "heads %d are not divisible by tp %d", m->heads, x->tp);
    if (m->heads / x->tp < x->ulysses)
        return usp_fail(USP_EINVAL, "heads %d / tp %d = %d < ulysses %d: a ulysses rank would hold no head", m->heads,
                        x->tp, m->heads / x->tp, x->ulysses);
    if (m->kv_heads % x->tp != 0)
        return usp_fail(USP_EINVAL, "kv_heads %d are not divisible by tp %d (each TP rank holds whole K/V heads)",
                        m->kv_heads, x->tp);
    if (m->ffn % x->tp != 0 || m->hidden % x->tp != 0)
        return usp_fail(USP_EINVAL, "ffn %d and hidden %d must be divisible by tp %d", m->ffn, m->hidden, x->tp);
    long split = (long)x->ulysses * x->ring * (x->tp_sp ? x->tp : 1);
    if (w->seq % split != 0)
        return usp_fail(USP_EINVAL, "seq %d is not divisible by %s = %ld", w->seq,
                        x->tp_sp ? "tp x ulysses x ring" : "ulysses x ring", split);
    return USP_OK;
}

usp_status usp_mix_check(const usp_workload *w, const usp_mix *x, int gpus) {
    USP_TRY(check_degrees(x, gpus));
    USP_TRY(check_shapes(w, x));
    usp_config c = plan_attention_config(w, x);
    usp_status st = usp_config_validate(&c);
    if (st != USP_OK) usp_error_prefix("attention of heads / tp: ");
    return st;
}

/* ------------------------------------------------------------- rank map */

int plan_rank_of(const usp_mix *x, int d, int r, int u, int t) {
    return ((d * x->ring + r) * x->ulysses + u) * x->tp + t;
}

void plan_coords_of(const usp_mix *x, int g, int *d, int *r, int *u, int *t) {
    *t = g % x->tp;
    g /= x->tp;
    *u = g % x->ulysses;
    g /= x->ulysses;
    *r = g % x->ring;
    *d = g / x->ring;
}

int plan_group_size(const usp_mix *x, plan_group grp) {
    switch (grp) {
    case PLAN_GROUP_TP: return x->tp;
    case PLAN_GROUP_ULYSSES: return x->ulysses;
    case PLAN_GROUP_RING: return x->ring;
    case PLAN_GROUP_ZERO: return usp_mix_zero_group(x);
    default: return 1;
    }
}

/* The ZeRO group of a TP rank: every (d, r, u) with the same t, in rank order. */
int plan_group_member(const usp_mix *x, plan_group grp, int rank, int index) {
    int d, r, u, t;
    plan_coords_of(x, rank, &d, &r, &u, &t);
    switch (grp) {
    case PLAN_GROUP_TP: return plan_rank_of(x, d, r, u, index);
    case PLAN_GROUP_ULYSSES: return plan_rank_of(x, d, r, index, t);
    case PLAN_GROUP_RING: return plan_rank_of(x, d, index, u, t);
    case PLAN_GROUP_ZERO: return index * x->tp + t;
    default: return rank;
    }
}

/* ----------------------------------------------------------- dimensions */

void plan_dims_make(const usp_workload *w, const usp_mix *x, plan_dims *d) {
    const usp_model *m = &w->model;
    memset(d, 0, sizeof *d);
    d->T = x->tp; d->U = x->ulysses; d->R = x->ring; d->Z = usp_mix_zero_group(x);
    d->b = usp_micro_batch(w, x);
    d->L = w->seq; d->h = m->hidden; d->H = m->heads; d->Hkv = m->kv_heads; d->D = m->head_dim;
    d->F = m->ffn; d->V = m->vocab; d->layers = m->layers;
    d->S = d->b * d->L / (d->U * d->R);
    d->sp = x->tp_sp;
    d->St = d->sp ? d->S / d->T : d->S;
    d->Ht = d->H / d->T;
    d->Hkvt = d->Hkv / d->T;
    d->Hu = d->Ht / d->U;
    d->Hkvu = d->Hkvt >= d->U ? d->Hkvt / d->U : 1;
    d->Vt = ceil(d->V / d->T);
    d->mlp_mats = m->gated_mlp ? 3 : 2;
    d->e = (double)usp_dtype_size(w->dtype);
    d->ea = (double)usp_buf_elem_size(USP_ROLE_ACCUM, w->dtype);
    usp_config wire = usp_config_default(); /* the planner's runs send the default wire */
    wire.dtype = w->dtype;
    d->ew = (double)usp_dtype_size(usp_wire_dtype(&wire));
    d->es = (double)usp_buf_elem_size(USP_ROLE_STATS, w->dtype);
    d->eg = w->grad_fp32 ? 4.0 : d->e;
    d->p_layer = d->h * (d->Ht + 2 * d->Hkvt) * d->D + d->Ht * d->D * d->h + d->mlp_mats * d->h * d->F / d->T +
                 2 * d->h;
    d->p_edges = d->Vt * d->h * (m->tied_embeddings ? 1 : 2) + d->h;
    d->shard_layer = ceil(d->p_layer / d->Z);
    d->shard_edges = ceil(d->p_edges / d->Z);
    d->zero = x->zero;
    d->recompute = x->recompute;
    d->grad_step = w->grad_sync_step;
    d->ring_allgather = x->ring > 1 && w->ring_impl == USP_RING_ALLGATHER;
}

/* ---------------------------------------------------------- communication */

const char *usp_comm_term_name(usp_comm_term t) {
    static const char *names[USP_TERM_COUNT] = {
        "tp activations", "ulysses all-to-all", "ring K/V", "zero param all-gather",
        "zero grad reduce-scatter", "grad all-reduce"};
    return (t >= 0 && t < USP_TERM_COUNT) ? names[t] : "?";
}

/* Megatron-LM with sequence parallel: forward all-gather before the QKV and
 * MLP-in projections, reduce-scatter after the output and MLP-out ones;
 * backward the mirror images plus an all-gather of each saved input for the
 * weight gradients: 4 forward + 6 backward, +4 with recomputation.
 * Without sp: an all-reduce after each row-parallel forward and each
 * column-parallel backward: 2 + 2, +2 with recomputation. */
static double tp_layer_bytes(const plan_dims *d) {
    if (d->T < 2) return 0;
    if (d->sp) return (10 + 4 * d->recompute) * (d->T - 1) * d->St * d->h * d->e;
    return (4 + 2 * d->recompute) * 2 * (d->T - 1) * (d->S * d->h * d->e / d->T);
}

/* The USP schedule's all-to-alls: forward Q, K, V, then O and LSE back;
 * backward dO, then dQ, dK, dV back (O, dQ, dK, dV on the wire dtype). */
static double ulysses_layer_bytes(const plan_dims *d) {
    if (d->U < 2) return 0;
    double q = d->S * d->Hu * d->D, kv = d->S * d->Hkvu * d->D, lse = d->S * d->Hu;
    double fwd = (d->U - 1) * (q * d->e + 2 * kv * d->e + q * d->ew + lse * d->es);
    double bwd = (d->U - 1) * (q * d->e + q * d->ew + 2 * kv * d->ew);
    return fwd * (1 + d->recompute) + bwd;
}

/* The ring: R-1 K/V hops forward; backward R-1 K/V hops and R dK/dV hops
 * (they travel home). All-gather variant: one all-gather forward, one
 * reduce-scatter of dK/dV backward. */
static double ring_layer_bytes(const plan_dims *d) {
    if (d->R < 2) return 0;
    double block = d->S * d->U * d->Hkvu * d->D; /* b (L/R) Hkvu D */
    double fwd = (d->R - 1) * 2 * block * d->e;
    double bwd = d->ring_allgather ? (d->R - 1) * 2 * block * d->ea
                                   : (d->R - 1) * 2 * block * d->e + d->R * 2 * block * d->ea;
    return fwd * (1 + d->recompute) + bwd;
}

/* Gradients and parameters of `shard` elements per rank over the ZeRO group:
 * ZeRO-0 all-reduces the gradients; ZeRO-1/2 reduce-scatter them and
 * all-gather the updated parameters; ZeRO-3 gathers the parameters for the
 * forward and again for the backward. Gradients travel in their own element
 * size (fp32 with grad_fp32), parameters in the data dtype. */
static void zero_bytes(const plan_dims *d, double shard, double out[USP_TERM_COUNT]) {
    if (d->Z < 2) return;
    double grads = (d->Z - 1) * shard * d->eg, params = (d->Z - 1) * shard * d->e;
    if (d->zero == 0) { out[USP_TERM_GRAD_AR] += 2 * grads; return; }
    out[USP_TERM_GRAD_RS] += grads;
    out[USP_TERM_ZERO_PARAM] += (d->zero == 3 ? 2 : 1) * params;
}

/* With grad_sync_step every gradient is reduced (and every ZeRO-1/2
 * parameter gathered) once per step, after the last layer's backward: those
 * bytes belong to the step's edges; ZeRO-3's per-layer gathers stay with
 * the layers. */
static void zero_step_bytes(const plan_dims *d, usp_comm_bytes *out) {
    if (!d->grad_step) {
        zero_bytes(d, d->shard_layer, out->layer);
        zero_bytes(d, d->shard_edges, out->edges);
        return;
    }
    zero_bytes(d, d->layers * d->shard_layer + d->shard_edges, out->edges);
    if (d->zero == 3 && d->Z > 1) {
        double params = (d->Z - 1) * d->shard_layer * d->e;
        out->layer[USP_TERM_ZERO_PARAM] += 2 * params;
        out->edges[USP_TERM_ZERO_PARAM] -= 2 * d->layers * params;
    }
}

/* Embedding (vocab-parallel: reduce-scatter forward, all-gather backward) and
 * LM head (all-gather forward, reduce-scatter backward); without sp one
 * all-reduce each. */
static double tp_edges_bytes(const plan_dims *d) {
    if (d->T < 2) return 0;
    if (d->sp) return 4 * (d->T - 1) * d->St * d->h * d->e;
    return 2 * 2 * (d->T - 1) * (d->S * d->h * d->e / d->T);
}

void usp_comm_closed_form(const usp_workload *w, const usp_mix *x, usp_comm_bytes *out) {
    plan_dims d;
    plan_dims_make(w, x, &d);
    memset(out, 0, sizeof *out);
    out->layer[USP_TERM_TP] = tp_layer_bytes(&d);
    out->layer[USP_TERM_ULYSSES] = ulysses_layer_bytes(&d);
    out->layer[USP_TERM_RING] = ring_layer_bytes(&d);
    out->edges[USP_TERM_TP] = tp_edges_bytes(&d);
    zero_step_bytes(&d, out);
    int n = usp_accumulation_steps(w, x);
    for (int t = 0; t < USP_TERM_COUNT; t++) {
        /* a micro-batch before the last (plan_program.c, accumulating) */
        int kept = t < USP_TERM_ZERO_PARAM || (t == USP_TERM_GRAD_RS && x->zero >= 2) ||
                   (t == USP_TERM_ZERO_PARAM && x->zero == 3);
        out->accum[t] = n > 1 && kept ? d.layers * out->layer[t] + out->edges[t] : 0;
        out->step[t] = d.layers * out->layer[t] + out->edges[t] + (n - 1) * out->accum[t];
    }
}

/* ----------------------------------------------------------------- memory */

/* What one layer keeps for its backward (Megatron-LM with flash attention,
 * no dropout): the two norms' inputs and outputs (sharded with sp), Q, K, V
 * and O head-sharded as the attention kernel saves them, the LSE, O again in
 * sequence order as the output projection's input (when ulysses > 1), and
 * the MLP's inner activations. */
static double layer_saved_bytes(const plan_dims *d) {
    double norms = 4 * d->St * d->h * d->e;
    double q = d->S * d->Ht * d->D, kv = d->S * d->U * d->Hkvu * d->D;
    double attn = (2 * q + 2 * kv + (d->U > 1 ? q : 0)) * d->e + d->S * d->Ht * d->es;
    double mlp = d->mlp_mats * d->S * d->F / d->T * d->e;
    return norms + attn + mlp;
}

/* Live buffers of the USP schedule at its busiest step (rank 0, built
 * alone). The last few configurations are remembered: a plan asks for each one once per ZeRO stage and
 * recomputation (a configuration compares equal byte for byte, or is built
 * again; one with a mask is never remembered: a freed mask's address can be
 * another's). */
enum { PEAK_MEMO = 16 };
static struct { usp_config c; double peak; int used; } peak_memo[PEAK_MEMO];
static int peak_memo_next;

static double attention_peak_bytes(const usp_workload *w, const usp_mix *x) {
    usp_config c = plan_attention_config(w, x);
    for (int i = 0; !c.mask && i < PEAK_MEMO; i++)
        if (peak_memo[i].used && !memcmp(&peak_memo[i].c, &c, sizeof c)) return peak_memo[i].peak;
    double peak = 0;
    if (usp_rank_peak_bytes(&c, 0, 1, &peak) != USP_OK) return 0;
    if (c.mask) return peak;
    peak_memo[peak_memo_next].c = c;
    peak_memo[peak_memo_next].peak = peak;
    peak_memo[peak_memo_next].used = 1;
    peak_memo_next = (peak_memo_next + 1) % PEAK_MEMO;
    return peak;
}

/* The transient of one layer's backward: the attention schedule's peak or
 * the MLP's gradients, whichever is larger, plus the layer's own saved set
 * when it was recomputed; ZeRO-3 holds two gathered layers (the current one
 * and the prefetched) and the layer's full gradient before its
 * reduce-scatter. The LM head holds the logits (dtype) and their fp32
 * softmax. */
static double working_bytes(const usp_workload *w, const usp_mix *x, const plan_dims *d, double saved) {
    double mlp = d->mlp_mats * d->S * d->F / d->T * d->e + 2 * d->S * d->h * d->e;
    double attn = attention_peak_bytes(w, x);
    double layer = (attn > mlp ? attn : mlp) + (d->recompute ? saved : 0);
    if (d->zero == 3 && d->Z > 1) layer += 3 * d->p_layer * d->e;
    double head = d->S * d->Vt * (d->e + 4) + d->S * d->h * d->e;
    return layer > head ? layer : head;
}

void usp_memory_closed_form(const usp_workload *w, const usp_mix *x, usp_memory *out) {
    plan_dims d;
    plan_dims_make(w, x, &d);
    memset(out, 0, sizeof *out);
    double full = d.layers * d.p_layer + d.p_edges;
    double shard = d.Z > 1 ? d.layers * d.shard_layer + d.shard_edges : full;
    out->params = d.e * (x->zero >= 3 ? shard : full);
    out->grads = d.eg * (x->zero >= 2 ? shard : full);
    out->optimizer = PLAN_OPTIMIZER_BYTES_PER_PARAM * (x->zero >= 1 ? shard : full);
    out->layer_saved = layer_saved_bytes(&d);
    out->activations = d.layers * (x->recompute ? d.St * d.h * d.e : out->layer_saved);
    out->working = working_bytes(w, x, &d, out->layer_saved);
    out->total = out->params + out->grads + out->optimizer + out->activations + out->working;
}

/* ------------------------------------------------------------------ FLOPs */

void usp_model_flops(const usp_workload *w, usp_flops *f) {
    const usp_model *m = &w->model;
    double tokens = (double)w->global_batch * w->seq;
    double h = m->hidden, D = m->head_dim;
    double matrices = m->layers * (usp_model_layer_params(m) - 2 * h) + (double)m->vocab * h;
    f->linear = 6 * matrices * tokens;
    double pairs = w->mask ? usp_mask_pairs(w->mask, 0) : (double)w->seq * w->seq * (w->causal ? 0.5 : 1);
    double fwd = 4.0 * w->global_batch * pairs * m->heads * D;
    f->attention = 3 * fwd * m->layers;
    f->total = f->linear + f->attention;
}

/* ------------------------------------------------------------- the table */

static const struct {
    const char *name, *param_ops, *act_ops, *split;
} ROWS[USP_COST_ROWS] = {
    {"SP-Ulysses", "all-reduce", "9 all-to-all", "heads/seq"},
    {"SP-Ring", "all-reduce", "ring P2P (overlapped)", "seq"},
    {"USP", "all-reduce", "ring P2P + 9 all-to-all", "heads/seq"},
    {"DP", "all-reduce", "-", "batch"},
    {"ZeRO-1", "all-gather + reduce-scatter", "-", "batch"},
    {"ZeRO-2", "all-gather + reduce-scatter", "-", "batch"},
    {"ZeRO-3", "2 all-gather + reduce-scatter", "-", "batch"},
    {"TP", "-", "4 all-reduce", "hidden"},
    {"TP-sp", "-", "6 all-gather + 4 reduce-scatter", "hidden"},
};

static usp_mix row_mix(usp_cost_row row, int n, int ulysses) {
    usp_mix x = {1, 1, 1, 1, 0, 0, 1, 0};
    switch (row) {
    case USP_COST_ULYSSES: x.ulysses = n; break;
    case USP_COST_RING: x.ring = n; break;
    case USP_COST_USP: x.ulysses = ulysses; x.ring = n / ulysses; break;
    case USP_COST_DP: x.dp = n; break;
    case USP_COST_ZERO1: x.dp = n; x.zero = 1; break;
    case USP_COST_ZERO2: x.dp = n; x.zero = 2; break;
    case USP_COST_ZERO3: x.dp = n; x.zero = 3; break;
    case USP_COST_TP: x.tp = n; x.tp_sp = 0; break;
    default: x.tp = n; break;
    }
    return x;
}

/* Model states of one layer per GPU: parameters and gradients (ZeRO-2
 * shards gradients, ZeRO-3 both), optimizer states (ZeRO-1 and up). */
static void layer_states(const plan_dims *d, int zero, double *pg, double *os) {
    double shard = d->Z > 1 ? d->shard_layer : d->p_layer;
    *pg = d->e * (zero >= 3 ? shard : d->p_layer) + d->eg * (zero >= 2 ? shard : d->p_layer);
    *os = PLAN_OPTIMIZER_BYTES_PER_PARAM * (zero >= 1 ? shard : d->p_layer);
}

static void fill_row(const usp_workload *w, usp_cost_row row, int degree, int ulysses, usp_cost *c) {
    c->name = ROWS[row].name;
    c->param_ops = ROWS[row].param_ops;
    c->act_ops = ROWS[row].act_ops;
    c->split = ROWS[row].split;
    c->mix = row_mix(row, degree, ulysses);
    usp_comm_bytes b;
    usp_comm_closed_form(w, &c->mix, &b);
    c->param_bytes = b.layer[USP_TERM_ZERO_PARAM] + b.layer[USP_TERM_GRAD_RS] + b.layer[USP_TERM_GRAD_AR];
    c->act_bytes = b.layer[USP_TERM_TP] + b.layer[USP_TERM_ULYSSES] + b.layer[USP_TERM_RING];
    plan_dims d;
    plan_dims_make(w, &c->mix, &d);
    layer_states(&d, c->mix.zero, &c->pg_bytes, &c->os_bytes);
    c->act_mem_bytes = layer_saved_bytes(&d);
}

usp_status usp_costs(const usp_workload *w, int degree, int ulysses, usp_cost rows[USP_COST_ROWS],
                     usp_status row_status[USP_COST_ROWS], char why[USP_COST_ROWS][200]) {
    USP_TRY(usp_model_validate(&w->model));
    if (degree < 1) return usp_fail(USP_EINVAL, "degree %d must be >= 1", degree);
    if (ulysses < 1 || degree % ulysses != 0)
        return usp_fail(USP_EINVAL, "ulysses %d does not divide the degree %d", ulysses, degree);
    for (int r = 0; r < USP_COST_ROWS; r++) {
        memset(&rows[r], 0, sizeof rows[r]);
        fill_row(w, (usp_cost_row)r, degree, ulysses, &rows[r]);
        row_status[r] = usp_mix_check(w, &rows[r].mix, 0);
        snprintf(why[r], 200, "%s", row_status[r] == USP_OK ? "" : usp_error());
    }
    return USP_OK;
}
