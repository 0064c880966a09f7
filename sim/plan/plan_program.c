/* plan_program.c: the per-rank step lists of one transformer layer and of
 * the once-per-step parts (see plan_internal.h).
 *
 * One layer, as Megatron-LM runs it with sequence parallel (TP-sp), around
 * the USP schedule for the attention of heads / tp:
 *   forward   norm; TP all-gather; QKV product; rotary; USP forward;
 *             output product; TP reduce-scatter; residual and norm; TP
 *             all-gather; MLP in; activation; MLP out; TP reduce-scatter;
 *   backward  (the whole forward again when recomputing) the mirror image:
 *             all-gather of the output gradient, data and weight gradients,
 *             the saved input all-gathered again for the weight gradient
 *             while the input gradient is reduce-scattered; USP backward.
 * Without sp, TP all-reduces after the row-parallel forward products and
 * the column-parallel backward ones instead.
 *
 * The BG stream holds one layer's share of the DP/ZeRO traffic, overlapped
 * as frameworks overlap it: during the forward, the parameter all-gather
 * (ZeRO-3 prefetching the next layer; ZeRO-1/2 gathering the parameters the
 * optimizer updated, as Megatron's overlapped parameter gather does); during
 * the backward, ZeRO-3's parameter prefetch and the gradient reduction of the
 * layer finished just before. The pass ends when its BG traffic is done, so
 * a layer takes the longer of its compute (with exposed activation
 * communication) and its gradient/parameter communication. */
#include "plan_internal.h"

#include <stdlib.h>
#include <string.h>
#include "usp/json.h"

typedef struct {
    const usp_workload *w;
    const usp_mix *x;
    const plan_device *dev;
    plan_dims d;
    plan_rank_program *rp;
    int rank, backward;
    int accumulating;          /* a micro-batch before the step's last one */
    const usp_schedule *attn;  /* the USP schedule of this layer's attention */
    int *usp_map;              /* attention step -> program step (latest splice) */
} builder;

/* --------------------------------------------------------------- emitting */

static int emit(builder *b, plan_step st) {
    plan_rank_program *rp = b->rp;
    if (rp->nsteps == rp->cap) {
        int cap = rp->cap ? rp->cap * 2 : 128;
        plan_step *grown = realloc(rp->steps, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        rp->steps = grown;
        rp->cap = cap;
    }
    st.backward = b->backward;
    rp->steps[rp->nsteps] = st;
    return rp->nsteps++;
}

/* name = a then b, cut to fit as snprintf(name, sizeof name, "%s%s", a, b)
 * cuts it (without printf's parsing: a layer program at ring 1024 names
 * millions of steps). */
static void name_cat(char name[PLAN_STEP_NAME], const char *a, const char *b) {
    size_t n = 0;
    for (; *a && n + 1 < PLAN_STEP_NAME; a++) name[n++] = *a;
    for (; *b && n + 1 < PLAN_STEP_NAME; b++) name[n++] = *b;
    name[n] = '\0';
}

static plan_step step_new(plan_step_kind kind, plan_stream stream, const char *name, int dep) {
    plan_step st;
    memset(&st, 0, sizeof st);
    st.kind = kind;
    st.stream = stream;
    st.counted = 1;
    st.peer_send = st.peer_recv = -1;
    st.a2a = -1;
    st.dep[0] = dep;
    st.dep[1] = -1;
    name_cat(st.name, name, "");
    return st;
}

static int compute(builder *b, const char *name, double seconds, int dep) {
    plan_step st = step_new(PLAN_STEP_COMPUTE, PLAN_COMPUTE, name, dep);
    st.seconds = seconds;
    return emit(b, st);
}

/* A product Y[m x n] = X[m x k] W[k x n] of `flops` = 2 m n k, reducing over k. */
static int gemm(builder *b, const char *name, double flops, double k, int dep) {
    return compute(b, name, plan_gemm_seconds(b->dev, flops, k), dep);
}

static int memory_bound(builder *b, const char *name, double bytes, int dep) {
    return compute(b, name, b->dev->prof.launch_s + bytes / b->dev->prof.hbm_bytes_per_s, dep);
}

static int collective(builder *b, plan_step_kind kind, plan_stream stream, plan_group grp, usp_comm_term term,
                      double message, const char *name, int dep) {
    plan_step st = step_new(kind, stream, name, dep);
    st.group = grp;
    st.term = term;
    st.message = message;
    return emit(b, st);
}

/* --------------------------------------------------------- TP collectives */

static int tp_active(const builder *b) { return b->x->tp > 1; }

/* Sequence-sharded -> full tokens before a column-parallel product (sp only). */
static int tp_gather(builder *b, const char *name, int dep) {
    if (!tp_active(b) || !b->d.sp) return dep;
    return collective(b, PLAN_STEP_ALLGATHER, PLAN_COMM, PLAN_GROUP_TP, USP_TERM_TP,
                      b->d.St * b->d.h * b->d.e, name, dep);
}

/* Partial sums -> summed (sequence-sharded with sp, replicated without). */
static int tp_reduce(builder *b, const char *name, int dep) {
    if (!tp_active(b)) return dep;
    if (b->d.sp)
        return collective(b, PLAN_STEP_REDUCE_SCATTER, PLAN_COMM, PLAN_GROUP_TP, USP_TERM_TP,
                          b->d.St * b->d.h * b->d.e, name, dep);
    return collective(b, PLAN_STEP_ALLREDUCE, PLAN_COMM, PLAN_GROUP_TP, USP_TERM_TP,
                      b->d.S * b->d.h * b->d.e / b->d.T, name, dep);
}

/* ------------------------------------------------------ the USP attention */

static int global_of_usp_rank(const builder *b, int g_usp) {
    int d, r, u, t;
    plan_coords_of(b->x, b->rank, &d, &r, &u, &t);
    return plan_rank_of(b->x, d, g_usp / b->x->ulysses, g_usp % b->x->ulysses, t);
}

/* This rank's rank in the USP schedule (ulysses-inner, as own_attention reads it). */
static int own_usp_rank(const builder *b) {
    int d, r, u, t;
    plan_coords_of(b->x, b->rank, &d, &r, &u, &t);
    return r * b->x->ulysses + u;
}

static plan_step usp_comm_step(const builder *b, const usp_step *u) {
    plan_step st = step_new(PLAN_STEP_SENDRECV, PLAN_COMM, u->name, -1);
    st.direct = 1; /* timed as the simulator's engine times the USP schedule */
    st.term = u->group == USP_GROUP_ULYSSES ? USP_TERM_ULYSSES : USP_TERM_RING;
    st.group = u->group == USP_GROUP_ULYSSES ? PLAN_GROUP_ULYSSES : PLAN_GROUP_RING;
    int n = usp_group_size(&b->attn->cfg, u->group);
    switch (u->kind) {
    case USP_STEP_ALL_TO_ALL:
        st.kind = PLAN_STEP_ALL_TO_ALL;
        st.message = u->bytes_sent / (n - 1);
        st.a2a = (int)u->a2a;
        break;
    case USP_STEP_ALLGATHER: st.kind = PLAN_STEP_ALLGATHER; st.message = u->bytes_sent / (n - 1); break;
    case USP_STEP_REDUCE_SCATTER: st.kind = PLAN_STEP_REDUCE_SCATTER; st.message = u->bytes_sent / (n - 1); break;
    default:
        st.message = u->bytes_sent;
        st.peer_send = global_of_usp_rank(b, usp_step_send_peer(&b->attn->cfg, own_usp_rank(b), u));
        st.peer_recv = global_of_usp_rank(b, usp_step_recv_peer(&b->attn->cfg, own_usp_rank(b), u));
    }
    return st;
}

/* Appends the attention steps [from, to) of this rank's USP schedule. Their
 * deps keep pointing at the same attention steps; a comm step that waits for
 * nothing inside the schedule (its inputs come from before) waits for
 * `input`, the step that produced Q/K/V or dO. */
static const usp_rank_schedule *own_attention(const builder *b) {
    int d, r, u, t;
    plan_coords_of(b->x, b->rank, &d, &r, &u, &t);
    return &b->attn->ranks[r * b->x->ulysses + u];
}

static int splice_attention(builder *b, int from, int to, const char *prefix, int input) {
    const usp_rank_schedule *rs = own_attention(b);
    int last = input;
    for (int i = from; i < to; i++) {
        const usp_step *s = usp_rank_step(rs, i);
        plan_step st;
        if (s->stream == USP_STREAM_COMM) st = usp_comm_step(b, s);
        else {
            st = step_new(PLAN_STEP_COMPUTE, PLAN_COMPUTE, s->name, -1);
            st.seconds = sim_step_seconds(&b->dev->prof, &b->attn->cfg, s);
            if (s->kind == USP_STEP_ATTN_FWD || s->kind == USP_STEP_ATTN_BWD) st.slowdown = b->dev->prof.comm_slowdown;
        }
        st.attention = 1;
        name_cat(st.name, prefix, s->name);
        st.dep[0] = s->dep >= 0 ? b->usp_map[s->dep] : (s->stream == USP_STREAM_COMM ? input : -1);
        if ((b->usp_map[i] = last = emit(b, st)) < 0) return -1;
    }
    return last;
}

/* ------------------------------------------------------------ one layer */

/* Forward of one layer; returns the last step (or -1 out of memory). */
static int layer_forward(builder *b, const char *p) {
    const plan_dims *d = &b->d;
    char n[PLAN_STEP_NAME];
    double tok_h = d->St * d->h * d->e;
    const usp_rank_schedule *rs = own_attention(b);
#define NAME(s) (name_cat(n, p, s), n)
    int i = memory_bound(b, NAME("norm1"), 2 * tok_h, -1);
    i = tp_gather(b, NAME("tp.ag.qkv_in"), i);
    i = gemm(b, NAME("qkv"), 2 * d->S * d->h * (d->Ht + 2 * d->Hkvt) * d->D, d->h, i);
    i = memory_bound(b, NAME("rotary"), 2 * d->S * (d->Ht + d->Hkvt) * d->D * d->e, -1);
    i = splice_attention(b, 0, rs->nfwd, p, i);
    i = gemm(b, NAME("attn_out"), 2 * d->S * d->Ht * d->D * d->h, d->Ht * d->D, i);
    i = tp_reduce(b, NAME("tp.rs.attn_out"), i);
    i = memory_bound(b, NAME("residual.norm2"), 5 * tok_h, i);
    i = tp_gather(b, NAME("tp.ag.mlp_in"), i);
    i = gemm(b, NAME("mlp_in"), 2 * d->S * d->h * d->F / d->T * (d->mlp_mats - 1), d->h, i);
    i = memory_bound(b, NAME("activation"), d->mlp_mats * d->S * d->F / d->T * d->e, -1);
    i = gemm(b, NAME("mlp_out"), 2 * d->S * d->F / d->T * d->h, d->F / d->T, -1);
    i = tp_reduce(b, NAME("tp.rs.mlp_out"), i);
    return memory_bound(b, NAME("residual"), 3 * tok_h, i);
#undef NAME
}

/* One column-parallel product's backward (its forward reduced over k = the
 * hidden size, its data gradient reduces over `out`, its weight gradient over
 * the tokens): the input gradient reduced over TP, the saved input gathered
 * again (sp) for the weight gradient. With tp_overlap, as Megatron-LM's
 * asynchronous path: the gather runs behind the data-gradient product, the
 * reduce-scatter behind the weight-gradient one. Without, each waits for
 * the product before it and the next product waits for it. Returns the
 * step the next kernel waits for. */
static int column_backward(builder *b, const char *name, double flops, double out, int ready) {
    char n[40];
    if (!b->x->tp_overlap) {
        snprintf(n, sizeof n, "tp.ag.%s.again", name);
        int again = tp_gather(b, n, ready);
        snprintf(n, sizeof n, "%s.dgrad", name);
        int dgrad = gemm(b, n, flops, out, again == ready ? -1 : again);
        snprintf(n, sizeof n, "tp.rs.d%s", name);
        int reduced = tp_reduce(b, n, dgrad);
        snprintf(n, sizeof n, "%s.wgrad", name);
        gemm(b, n, flops, b->d.S, reduced == dgrad ? -1 : reduced);
        return -1;
    }
    snprintf(n, sizeof n, "%s.dgrad", name);
    int dgrad = gemm(b, n, flops, out, -1);
    snprintf(n, sizeof n, "tp.ag.%s.again", name);
    int again = tp_gather(b, n, ready);
    snprintf(n, sizeof n, "tp.rs.d%s", name);
    int reduced = tp_reduce(b, n, dgrad);
    snprintf(n, sizeof n, "%s.wgrad", name);
    gemm(b, n, flops, b->d.S, again == ready ? -1 : again);
    return reduced == dgrad ? -1 : reduced;
}

/* Backward of one layer (after its recomputed forward, if any); `ready` is
 * the compute step the output gradient comes after. */
static int layer_backward(builder *b, int ready) {
    const plan_dims *d = &b->d;
    const usp_rank_schedule *rs = own_attention(b);
    double tok_h = d->St * d->h * d->e, mlp_out = 2 * d->S * d->F / d->T * d->h;
    int i = tp_gather(b, "tp.ag.dmlp_out", ready);
    i = gemm(b, "mlp_out.dgrad", mlp_out, d->h, i);
    gemm(b, "mlp_out.wgrad", mlp_out, d->S, -1);
    i = memory_bound(b, "activation.bwd", (2 * d->mlp_mats - 1) * d->S * d->F / d->T * d->e, -1);
    i = column_backward(b, "mlp_in", 2 * d->S * d->h * d->F / d->T * (d->mlp_mats - 1),
                        d->F / d->T * (d->mlp_mats - 1), i);
    i = memory_bound(b, "norm2.bwd", 4 * tok_h, i);
    i = tp_gather(b, "tp.ag.dattn_out", i);
    int dout = gemm(b, "attn_out.dgrad", 2 * d->S * d->Ht * d->D * d->h, d->h, i);
    gemm(b, "attn_out.wgrad", 2 * d->S * d->Ht * d->D * d->h, d->S, -1);
    i = splice_attention(b, rs->nfwd, rs->nsteps, "", dout);
    i = memory_bound(b, "rotary.bwd", 2 * d->S * (d->Ht + d->Hkvt) * d->D * d->e, -1);
    i = column_backward(b, "qkv", 2 * d->S * d->h * (d->Ht + 2 * d->Hkvt) * d->D, (d->Ht + 2 * d->Hkvt) * d->D, i);
    return memory_bound(b, "norm1.bwd", 4 * tok_h, i);
}

/* ---------------------------------------------------- gradients and ZeRO */

static int zero_active(const builder *b) { return b->d.Z > 1; }

static int param_gather(builder *b, const char *name, double shard, int counted, int dep) {
    if (!zero_active(b) || b->x->zero == 0) return -1;
    plan_step st = step_new(PLAN_STEP_ALLGATHER, PLAN_BG, name, dep);
    st.group = PLAN_GROUP_ZERO;
    st.term = USP_TERM_ZERO_PARAM;
    st.message = shard * b->d.e;
    st.counted = counted;
    return emit(b, st);
}

/* ZeRO-0 all-reduces gradients, ZeRO-1..3 reduce-scatter them. */
static int grad_reduce(builder *b, const char *name, double shard, int counted, int dep) {
    if (!zero_active(b)) return -1;
    plan_step st = step_new(b->x->zero == 0 ? PLAN_STEP_ALLREDUCE : PLAN_STEP_REDUCE_SCATTER, PLAN_BG, name, dep);
    st.group = PLAN_GROUP_ZERO;
    st.term = b->x->zero == 0 ? USP_TERM_GRAD_AR : USP_TERM_GRAD_RS;
    st.message = shard * b->d.eg;
    st.counted = counted;
    return emit(b, st);
}

/* A zero-length compute step: the pass is not over before `dep` is. */
static int wait_for(builder *b, const char *name, int dep) {
    return dep < 0 ? -1 : compute(b, name, 0, dep);
}

/* ------------------------------------------------------------ assembly */

/* Whether a layer carries its own share of the DP/ZeRO traffic: not when
 * gradients are synchronized once per step (ZeRO-3 still gathers each
 * layer's parameters for its forward and backward). A micro-batch before
 * the last accumulates its gradients: it reduces them only when the shards
 * are all a rank keeps (ZeRO-2/3, as DeepSpeed does), and only ZeRO-3
 * gathers parameters (the others' have not changed since the last step). */
static int layer_grads(const builder *b) { return !b->d.grad_step && (!b->accumulating || b->x->zero >= 2); }
static int layer_params(const builder *b) {
    return (!b->d.grad_step || b->x->zero == 3) && (!b->accumulating || b->x->zero == 3);
}

/* The end of a micro-batch before the last: the ZeRO-2/3 reductions the
 * layers did not carry, no optimizer. */
static usp_status end_accumulating(builder *b, int i) {
    const plan_dims *d = &b->d;
    int red = -1;
    if (b->x->zero >= 2 && d->grad_step)
        red = grad_reduce(b, "grad.reduce.step", d->layers * d->shard_layer + d->shard_edges, 1, i);
    else if (b->x->zero >= 2) {
        red = grad_reduce(b, "grad.reduce.embedding", d->shard_edges, 1, i);
        int last = grad_reduce(b, "grad.reduce.last_layer", d->shard_layer, 0, i);
        if (last >= 0) red = last;
    }
    if (red >= 0) i = wait_for(b, "wait.grads", red);
    return i < 0 ? usp_fail(USP_EINTERNAL, "out of memory building the step") : USP_OK;
}

static usp_status build_layer_rank(builder *b) {
    b->backward = 0;
    int gather = layer_params(b) ? param_gather(b, "zero.ag.params", b->d.shard_layer, 1, -1) : -1;
    if (layer_forward(b, "") < 0) return usp_fail(USP_EINTERNAL, "out of memory building a layer");
    wait_for(b, "fwd.wait.params", gather);
    /* The backward's BG traffic starts with the backward, not before. */
    int fwd_end = b->rp->nsteps - 1;
    b->backward = 1;
    int bg = b->x->zero == 3 ? param_gather(b, "zero.ag.params.bwd", b->d.shard_layer, 1, fwd_end) : -1;
    int red = layer_grads(b) ? grad_reduce(b, "grad.reduce", b->d.shard_layer, 1, fwd_end) : -1;
    if (red < 0) red = bg;
    int ready = b->x->recompute ? layer_forward(b, "rc.") : fwd_end;
    if (ready < 0 || layer_backward(b, ready) < 0) return usp_fail(USP_EINTERNAL, "out of memory building a layer");
    wait_for(b, "bwd.wait.grads", red);
    return USP_OK;
}

/* Embedding (vocab-parallel lookup, summed over TP) and the first layer's
 * parameters, which nothing hides; after the layers the final norm, the
 * LM head and the loss; backward the mirror image; then the gradient
 * reduction of the embedding and of the last layer, which nothing hides
 * either, and the optimizer step over the local parameters.
 * With grad_sync_step: after the embedding's backward one reduction of every
 * gradient, the optimizer, then one all-gather of every ZeRO-1/2 parameter
 * shard, each waiting for the one before (Megatron-LM's default: one bucket,
 * reduced in finalize_model_grads, gathered in the optimizer's step). */
static usp_status build_edges_rank(builder *b) {
    const plan_dims *d = &b->d;
    double tok_h = d->St * d->h * d->e, head = 2 * d->S * d->h * d->Vt;
    b->backward = 0;
    int first = layer_params(b) ? param_gather(b, "zero.ag.first_layer", d->shard_layer, 0, -1) : -1;
    int emb_params = layer_params(b) ? param_gather(b, "zero.ag.embedding", d->shard_edges, 1, -1) : -1;
    int i = memory_bound(b, "embedding", 2 * d->S * d->h * d->e, emb_params);
    i = tp_reduce(b, "tp.rs.embedding", i);
    wait_for(b, "wait.first_layer", first);
    i = memory_bound(b, "final_norm", 2 * tok_h, i);
    i = tp_gather(b, "tp.ag.head_in", i);
    i = gemm(b, "lm_head", head, d->h, i);
    memory_bound(b, "cross_entropy", 3 * d->S * d->Vt * 4, -1);
    b->backward = 1;
    int bg = b->x->zero == 3 ? param_gather(b, "zero.ag.embedding.bwd", d->shard_edges, 1, -1) : -1;
    memory_bound(b, "cross_entropy.bwd", d->S * d->Vt * (2 * 4 + d->e), bg);
    i = gemm(b, "lm_head.dgrad", head, d->Vt, -1);
    gemm(b, "lm_head.wgrad", head, d->S, -1);
    i = tp_reduce(b, "tp.rs.dhead_in", i);
    i = memory_bound(b, "final_norm.bwd", 4 * tok_h, i);
    i = tp_gather(b, "tp.ag.dembedding", i);
    i = memory_bound(b, "embedding.bwd", 2 * d->S * d->h * d->e, i);
    if (b->accumulating) return end_accumulating(b, i);
    double local = zero_active(b) && b->x->zero >= 1 ? d->layers * d->shard_layer + d->shard_edges
                                                     : d->layers * d->p_layer + d->p_edges;
    /* the optimizer reads the gradient in its own element size */
    double traffic = (PLAN_OPTIMIZER_TRAFFIC_PER_PARAM - d->e + d->eg) * local;
    if (d->grad_step) {
        int red = grad_reduce(b, "grad.reduce.step", d->layers * d->shard_layer + d->shard_edges, 1, i);
        i = memory_bound(b, "optimizer", traffic, red);
        int gather = b->x->zero == 1 || b->x->zero == 2
                         ? param_gather(b, "zero.ag.params.step", d->layers * d->shard_layer + d->shard_edges, 1, i)
                         : -1;
        if (gather >= 0) i = wait_for(b, "wait.params", gather);
        return i < 0 ? usp_fail(USP_EINTERNAL, "out of memory building the step") : USP_OK;
    }
    int red = grad_reduce(b, "grad.reduce.embedding", d->shard_edges, 1, i);
    int last = grad_reduce(b, "grad.reduce.last_layer", d->shard_layer, 0, i);
    i = memory_bound(b, "optimizer", traffic, last >= 0 ? last : red);
    return i < 0 ? usp_fail(USP_EINTERNAL, "out of memory building the step") : USP_OK;
}

/* The layer's attention alone: the USP schedule's forward and backward as
 * they are spliced into a layer, with nothing before them (the first comm
 * step of each pass waits for nothing, as in the simulator's engine). */
static usp_status build_attention_rank(builder *b) {
    const usp_rank_schedule *rs = own_attention(b);
    b->backward = 0;
    splice_attention(b, 0, rs->nfwd, "", -1);
    b->backward = 1;
    splice_attention(b, rs->nfwd, rs->nsteps, "", -1);
    return b->rp->nsteps == rs->nsteps ? USP_OK : usp_fail(USP_EINTERNAL, "out of memory building the attention");
}

enum { BUILD_EDGES, BUILD_LAYER, BUILD_ATTENTION };

/* Builds the ranks `only` accepts (NULL: all) around the attention schedule
 * `attn`: what is BUILD_LAYER, BUILD_EDGES or BUILD_ATTENTION. */
static usp_status build_with(const usp_workload *w, const usp_mix *x, const plan_device *dev, int what,
                             int accumulating, int (*only)(const usp_mix *x, int rank), const usp_schedule *attn,
                             plan_program *out) {
    out->mix = *x;
    out->world = usp_mix_gpus(x);
    out->attn = attn->cfg;
    out->ranks = usp_calloc((size_t)out->world, sizeof *out->ranks);
    usp_status st = out->ranks ? USP_OK : USP_EINTERNAL;
    int most = 0;
    for (int g = 0; st == USP_OK && g < attn->world; g++)
        if (attn->ranks[g].nsteps > most) most = attn->ranks[g].nsteps;
    int *map = st == USP_OK ? usp_calloc((size_t)most + 1, sizeof *map) : NULL;
    if (st == USP_OK && !map) st = USP_EINTERNAL;
    for (int g = 0; st == USP_OK && g < out->world; g++) {
        if (only && !only(x, g)) continue; /* a rank no actor runs: no steps */
        builder b = {.w = w, .x = x, .dev = dev, .rp = &out->ranks[g], .rank = g, .attn = attn, .usp_map = map,
                     .accumulating = accumulating};
        plan_dims_make(w, x, &b.d);
        st = what == BUILD_LAYER       ? build_layer_rank(&b)
           : what == BUILD_ATTENTION ? build_attention_rank(&b)
                                     : build_edges_rank(&b);
    }
    free(map);
    return st;
}

static usp_status build(const usp_workload *w, const usp_mix *x, const plan_device *dev, int what,
                        int accumulating, int (*only)(const usp_mix *x, int rank), plan_program *out) {
    memset(out, 0, sizeof *out);
    USP_TRY(usp_mix_check(w, x, 0));
    usp_config c = plan_attention_config(w, x);
    usp_schedule attn;
    memset(&attn, 0, sizeof attn);
    /* the once-per-step parts hold no attention: no schedule to build */
    usp_status st = what == BUILD_EDGES ? usp_schedule_init_empty(&c, c.ulysses * c.ring, &attn)
                                        : usp_schedule_build(&c, 1, &attn);
    if (st == USP_OK) st = build_with(w, x, dev, what, accumulating, only, &attn, out);
    usp_schedule_free(&attn);
    if (st != USP_OK) plan_program_free(out);
    return st;
}

static int only_rank0(const usp_mix *x, int rank) { (void)x; return rank == 0; }

usp_status plan_build_rank0(const usp_workload *w, const usp_mix *x, const plan_device *dev, int layer,
                            int accumulating, plan_program *out) {
    memset(out, 0, sizeof *out);
    USP_TRY(usp_mix_check(w, x, 0));
    usp_config c = plan_attention_config(w, x);
    usp_step *steps = NULL;
    int n = 0, nfwd = 0;
    usp_schedule attn;
    memset(&attn, 0, sizeof attn);
    usp_status st = usp_schedule_build_rank(&c, 0, 1, &steps, &n, &nfwd);
    if (st == USP_OK) st = usp_schedule_init_empty(&c, c.ulysses * c.ring, &attn);
    if (st == USP_OK) st = usp_schedule_set_steps(&attn, 0, steps, n, nfwd);
    if (st == USP_OK)
        st = build_with(w, x, dev, layer ? BUILD_LAYER : BUILD_EDGES, accumulating, only_rank0, &attn, out);
    usp_schedule_free(&attn);
    free(steps);
    if (st != USP_OK) plan_program_free(out);
    return st;
}

usp_status plan_compute_bound(const usp_workload *w, const usp_mix *x, const plan_device *dev, int layer,
                              int accumulating, double *seconds) {
    *seconds = 0;
    plan_program prog;
    USP_TRY(plan_build_rank0(w, x, dev, layer, accumulating, &prog));
    for (int i = 0; i < prog.ranks[0].nsteps; i++)
        if (prog.ranks[0].steps[i].stream == PLAN_COMPUTE) *seconds += prog.ranks[0].steps[i].seconds;
    plan_program_free(&prog);
    return USP_OK;
}

usp_status plan_build_layer(const usp_workload *w, const usp_mix *x, const plan_device *dev, int accumulating,
                            plan_program *out) {
    return build(w, x, dev, BUILD_LAYER, accumulating, NULL, out);
}

usp_status plan_build_edges(const usp_workload *w, const usp_mix *x, const plan_device *dev, int accumulating,
                            plan_program *out) {
    return build(w, x, dev, BUILD_EDGES, accumulating, NULL, out);
}

usp_status plan_build_attention(const usp_workload *w, const usp_mix *x, const plan_device *dev, plan_program *out) {
    return build(w, x, dev, BUILD_ATTENTION, 0, NULL, out);
}

usp_status plan_build_some(const usp_workload *w, const usp_mix *x, const plan_device *dev, int layer,
                           int accumulating, int (*only)(const usp_mix *x, int rank), plan_program *out) {
    return build(w, x, dev, layer ? BUILD_LAYER : BUILD_EDGES, accumulating, only, out);
}

void plan_program_free(plan_program *p) {
    if (p->ranks)
        for (int g = 0; g < p->world; g++) free(p->ranks[g].steps);
    free(p->ranks);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------- the device */

/* A number >= 0 of the profile, 0 when absent; a bad one is refused. */
static usp_status optional_number(const usp_json *v, const char *what, double *out) {
    *out = 0;
    if (!v) return USP_OK;
    if (v->type != USP_JSON_NUMBER || !(v->number >= 0))
        return usp_fail(USP_EINVAL, "line %d: '%s' must be a number >= 0", v->line, what);
    *out = v->number;
    return USP_OK;
}

/* The optional matrix-product figures of a profile (the simulator's loader
 * does not need them), each 0 when absent:
 *   "matmul_tflops": {"bf16": 267.9, ...}  the rate measured ...
 *   "matmul_measured_k": 2048              ... for products reducing over this length
 *   "matmul_short_k": 267                  a product reducing over k runs at k / (k + 267)
 *                                          of the rate of a long one */
static usp_status profile_matmul(const char *name_or_file, usp_dtype dtype, plan_device *dev) {
    const char *text = NULL;
    for (int i = 0; i < SIM_NEMBEDDED_PROFILES; i++)
        if (strcmp(SIM_EMBEDDED_PROFILES[i].name, name_or_file) == 0) text = SIM_EMBEDDED_PROFILES[i].json;
    usp_json *root = NULL;
    USP_TRY(text ? usp_json_parse(text, strlen(text), &root) : usp_json_parse_file(name_or_file, &root));
    const usp_json *rates = usp_json_get(root, "matmul_tflops");
    double tflops = 0;
    usp_status st = optional_number(rates ? usp_json_get(rates, usp_dtype_name(dtype)) : NULL, "matmul_tflops", &tflops);
    if (st == USP_OK) st = optional_number(usp_json_get(root, "matmul_measured_k"), "matmul_measured_k", &dev->matmul_ref_k);
    if (st == USP_OK) st = optional_number(usp_json_get(root, "matmul_short_k"), "matmul_short_k", &dev->matmul_short_k);
    const usp_json *is_max = usp_json_get(root, "matmul_best_of_search");
    if (st == USP_OK && is_max && is_max->type != USP_JSON_BOOL)
        st = usp_fail(USP_EINVAL, "line %d: 'matmul_best_of_search' must be true or false", is_max->line);
    dev->matmul_is_max = st == USP_OK && is_max && is_max->boolean;
    usp_json_free(root);
    if (st != USP_OK) usp_error_prefix("profile %s: ", name_or_file);
    dev->matmul_flops = tflops * 1e12;
    return st;
}

double plan_gemm_seconds(const plan_device *dev, double flops, double k) {
    double rate = dev->matmul_flops, s = dev->matmul_short_k;
    if (s > 0 && k > 0) {
        rate *= k / (k + s);                                       /* this product's reduction */
        if (dev->matmul_ref_k > 0) rate /= dev->matmul_ref_k / (dev->matmul_ref_k + s); /* the measured one's */
        if (dev->matmul_is_max && rate > dev->matmul_flops) rate = dev->matmul_flops;
    }
    return dev->prof.launch_s + flops / rate;
}

usp_status plan_device_load(const char *profile, const usp_workload *w, double matmul_tflops, plan_device *dev) {
    memset(dev, 0, sizeof *dev);
    USP_TRY(sim_profile_load(profile, &dev->prof));
    usp_config c = plan_attention_config(w, &(usp_mix){1, 1, 1, 1, 0, 0, 1, 0});
    USP_TRY(sim_profile_supports(&dev->prof, &c));
    dev->peak_flops = dev->prof.peak_flops[w->dtype];
    USP_TRY(profile_matmul(profile, w->dtype, dev));
    if (matmul_tflops > 0) { /* the user's one rate for every shape */
        dev->matmul_flops = matmul_tflops * 1e12;
        dev->matmul_short_k = dev->matmul_ref_k = 0;
        dev->matmul_is_max = 0;
    }
    if (dev->matmul_flops <= 0) {
        dev->matmul_flops = PLAN_MATMUL_PEAK_FRACTION * dev->peak_flops;
        dev->matmul_short_k = dev->matmul_ref_k = 0;
    }
    return USP_OK;
}
