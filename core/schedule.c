/* schedule.c: builds every rank's USP step list (see usp/schedule.h).
 *
 * Forward, for the rank at ring rank r, ulysses rank u:
 *   all-to-all Q, K, V (sequence -> heads)       skipped when ulysses == 1
 *   O = 0, LSE = -inf
 *   ring step s = 0..R-1: K/V block of ring rank (r - s) mod R is local;
 *     send it on to r+1 while attending to it (s < R-1), merge into (O, LSE)
 *     (allgather: gather all blocks first, then attend to each)
 *   all-to-all O, LSE back (heads -> sequence)
 * Backward mirrors it: dO all-to-all, DELTA = rowsum(O*dO), the ring visits
 * every block again; dK/dV of a block travel with it and arrive home after
 * R hops (allgather: reduce-scatter), then dQ, dK, dV go back.
 *
 * Backward ring step s > 0 (dK/dV double-buffered): the attention adds the
 * block's gradients into a zeroed DK_BLK/DV_BLK of its own, while the comm
 * stream delivers the travelling dK/dV of that block (hop s-1) into the other
 * pair of ring buffers; an ACCUM step then adds DK_BLK into them and hop s
 * sends them on. So every hop but the last (home) runs under the next
 * block's attention, and only the ACCUM waits for it:
 *   compute: init blk | attn(s) -> blk | accum ring_dk(s) += blk
 *   comm:    kv(s) | dkv(s-1) -> ring_dk(s)                  (under attn(s))
 * With cfg->dkv_serial the attention adds straight into the delivered
 * dK/dV instead, and so waits for each hop (the schedule of older traces).
 *
 * Dependencies are derived, not written by hand: each step names the buffers
 * it reads and writes, and its `dep` is the latest step on the other stream
 * that wrote what it reads, or touched what it writes. */
#include "usp/schedule.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "usp/a2a.h"
#include "usp/dispatch.h"
#include "usp/layout.h"

/* One rank's whole list while it is built (usp_schedule_build then keeps
 * it compactly, see usp/schedule.h). */
typedef struct {
    int rank, ring_rank, ulysses_rank;
    int nsteps, nfwd;
    usp_step *steps;
    usp_buf_info bufs[USP_BUF_COUNT];
} rank_list;

typedef struct {
    const usp_config *c;
    rank_list *rs;
    int cap;
    int last_write[USP_BUF_COUNT];
    int last_read[USP_BUF_COUNT][2];
    int comm_tag;
} builder;

#define MAX_BUFS 8
typedef struct { usp_buf b[MAX_BUFS]; int n; } buf_set;

/* ---------------------------------------------------------------- groups */

int usp_group_size(const usp_config *c, usp_group g) {
    return g == USP_GROUP_ULYSSES ? c->ulysses : g == USP_GROUP_RING ? c->ring : 1;
}

int usp_group_member(const usp_config *c, usp_group g, int rank, int index) {
    int r, u;
    usp_coords_of(c, rank, &r, &u);
    if (g == USP_GROUP_ULYSSES) return usp_rank_of(c, r, index);
    if (g == USP_GROUP_RING) return usp_rank_of(c, index, u);
    return rank;
}

int usp_group_index(const usp_config *c, usp_group g, int rank) {
    int r, u;
    usp_coords_of(c, rank, &r, &u);
    return g == USP_GROUP_ULYSSES ? u : g == USP_GROUP_RING ? r : 0;
}

/* ---------------------------------------------------------------- masks */

double usp_block_pairs(const usp_block *b) {
    double n = b->q_len, m = b->kv_len;
    if (!b->causal) return n * m;
    /* row i sees min(m, max(0, i + diag + 1)) keys */
    double total = 0;
    long first_seen = b->diag >= 0 ? 0 : -(long)b->diag;           /* first row with a key */
    long first_full = (long)m - 1 - b->diag;                        /* first row seeing all m */
    if (first_full < first_seen) first_full = first_seen;
    long lo = first_seen, hi = first_full < (long)n ? first_full : (long)n; /* partial rows [lo,hi) */
    if (hi > lo) {
        double a0 = lo + b->diag + 1, a1 = (hi - 1) + b->diag + 1;
        total += (a0 + a1) * (double)(hi - lo) / 2;
    }
    if ((long)n > first_full) total += (n - first_full) * m;
    return total;
}

/* The (query rows, key rows) of local queries of ring rank r against the K/V
 * block of ring rank j that the causal mask lets through, fully masked parts
 * skipped. Returns how many blocks (0..2) were written. */
static int ring_blocks(const usp_config *c, int r, int j, usp_block out[2]) {
    int n = c->seq / c->ring, h = n / 2;
    usp_block all = {0, n, 0, n, 0, 0}, diag = {0, n, 0, n, 1, 0};
    if (!c->causal) { out[0] = all; return 1; }
    switch (usp_token_layout(c)) {
    case USP_RING_ZIGZAG: /* queries: chunks r, 2R-1-r; keys: chunks j, 2R-1-j */
        if (j == r) { out[0] = diag; return 1; }
        if (j < r) { out[0] = (usp_block){0, n, 0, h, 0, 0}; return 1; }
        out[0] = (usp_block){h, h, 0, n, 0, 0};
        return 1;
    case USP_RING_STRIPE: /* query r + R*i sees key j + R*k iff k <= i (j <= r) or k < i */
        out[0] = diag;
        if (j > r) out[0].diag = -1;
        return 1;
    default: /* basic: contiguous chunks */
        if (j == r) { out[0] = diag; return 1; }
        if (j < r) { out[0] = all; return 1; }
        return 0;
    }
}

/* ---------------------------------------------------------------- buffers */

size_t usp_buf_elem_size(usp_buf_role role, usp_dtype dtype) {
    size_t s = usp_dtype_size(dtype);
    return (role != USP_ROLE_DATA && s < 4) ? 4 : s;
}

static const char *buf_names[USP_BUF_COUNT] = {
    "q_in", "k_in", "v_in", "do_in", "q", "k", "v", "kb0", "vb0", "kb1", "vb1",
    "k_all", "v_all", "o_blk", "lse_blk", "o", "lse", "do", "delta", "dq",
    "dkb0", "dvb0", "dkb1", "dvb1", "dk", "dv", "dk_blk", "dv_blk", "dk_all", "dv_all", "send", "recv",
    "o_out", "lse_out", "dq_out", "dk_out", "dv_out"};

const char *usp_buf_name(usp_buf b) {
    return (b >= 0 && b < USP_BUF_COUNT) ? buf_names[b] : "-";
}

static usp_buf_role buf_role(usp_buf b) {
    switch (b) {
    case USP_BUF_LSE_BLK: case USP_BUF_LSE: case USP_BUF_DELTA: case USP_BUF_LSE_OUT:
        return USP_ROLE_STATS;
    case USP_BUF_O_BLK: case USP_BUF_O: case USP_BUF_DQ: case USP_BUF_DKB0: case USP_BUF_DVB0:
    case USP_BUF_DKB1: case USP_BUF_DVB1: case USP_BUF_DK: case USP_BUF_DV:
    case USP_BUF_DK_BLK: case USP_BUF_DV_BLK: case USP_BUF_DK_ALL: case USP_BUF_DV_ALL: case USP_BUF_SEND: case USP_BUF_RECV:
    case USP_BUF_O_OUT: case USP_BUF_DQ_OUT: case USP_BUF_DK_OUT: case USP_BUF_DV_OUT:
        return USP_ROLE_ACCUM;
    default:
        return USP_ROLE_DATA;
    }
}

/* Elements of buffer b on ulysses rank u (its heads: usp/layout.h). */
static long buf_elems(const usp_config *c, int u, usp_buf b) {
    long B = c->batch, D = c->head_dim, R = c->ring, lr = c->seq / R, ls = lr / c->ulysses;
    int h0, hu, k0, hkvu;
    usp_rank_heads(c, u, &h0, &hu);
    usp_rank_kv_heads(c, u, &k0, &hkvu);
    long block = B * lr * hkvu * D, staging = 0;
    for (usp_a2a a = USP_A2A_Q; a <= USP_A2A_DKV; a++) {
        long send = usp_a2a_send_offset(c, a, u, c->ulysses), recv = usp_a2a_recv_offset(c, a, u, c->ulysses);
        if (send > staging) staging = send;
        if (recv > staging) staging = recv;
    }
    switch (b) {
    case USP_BUF_Q_IN: case USP_BUF_DO_IN: case USP_BUF_O_OUT: case USP_BUF_DQ_OUT:
        return B * ls * c->heads * D;
    case USP_BUF_K_IN: case USP_BUF_V_IN: case USP_BUF_DK_OUT: case USP_BUF_DV_OUT:
        return B * ls * c->kv_heads * D;
    case USP_BUF_LSE_OUT: return B * c->heads * ls;
    case USP_BUF_Q: case USP_BUF_DO: case USP_BUF_O: case USP_BUF_O_BLK: case USP_BUF_DQ:
        return B * lr * hu * D;
    case USP_BUF_LSE: case USP_BUF_LSE_BLK: case USP_BUF_DELTA: return B * hu * lr;
    case USP_BUF_K_ALL: case USP_BUF_V_ALL: case USP_BUF_DK_ALL: case USP_BUF_DV_ALL:
        return R * block;
    case USP_BUF_SEND: case USP_BUF_RECV: return staging;
    default: return block; /* K, V, ring buffers, DK, DV, DK_BLK, DV_BLK */
    }
}

static usp_buf owner_in(const usp_buf_info *bufs, usp_buf b) {
    while (b != USP_BUF_NONE && bufs[b].alias != USP_BUF_NONE) b = bufs[b].alias;
    return b;
}

usp_buf usp_buf_owner(const usp_rank_schedule *rs, usp_buf b) { return owner_in(rs->bufs, b); }

static usp_buf list_owner(const rank_list *rs, usp_buf b) { return owner_in(rs->bufs, b); }

/* Sizes were declared once per rank (declare_buffers); read them from there. */
static double buf_bytes(const builder *bd, usp_buf b) {
    const usp_buf_info *bi = &bd->rs->bufs[b];
    return (double)bi->elems * usp_buf_elem_size(bi->role, bd->c->dtype);
}

/* ---------------------------------------------------------------- emitting */

static usp_step step_new(usp_step_kind kind, usp_phase phase, const char *name) {
    usp_step st;
    memset(&st, 0, sizeof st);
    st.kind = kind;
    st.phase = phase;
    st.stream = (kind == USP_STEP_ALL_TO_ALL || kind == USP_STEP_SENDRECV ||
                 kind == USP_STEP_ALLGATHER || kind == USP_STEP_REDUCE_SCATTER)
                    ? USP_STREAM_COMM : USP_STREAM_COMPUTE;
    st.src[0] = st.src[1] = st.dst[0] = st.dst[1] = USP_BUF_NONE;
    st.ring_step = -1;
    st.mask_layer = -1;
    st.dep = -1;
    st.tag = -1;
    /* "fwd." or "bwd." then name, cut as snprintf would (without printf's
     * parsing: the planner builds millions of steps at ring 1024) */
    size_t n = 0;
    for (const char *c = phase == USP_PHASE_FWD ? "fwd." : "bwd."; *c && n + 1 < sizeof st.name; c++) st.name[n++] = *c;
    for (const char *c = name; *c && n + 1 < sizeof st.name; c++) st.name[n++] = *c;
    st.name[n] = '\0';
    return st;
}

static void note_use(builder *bd, usp_buf b, int idx) {
    usp_buf_info *bi = &bd->rs->bufs[list_owner(bd->rs, b)];
    if (bi->first_step < 0) bi->first_step = idx;
    bi->last_step = idx;
}

/* Appends st; its dep comes from what it reads and writes. */
static usp_status emit(builder *bd, usp_step st, buf_set reads, buf_set writes) {
    rank_list *rs = bd->rs;
    if (rs->nsteps == bd->cap) {
        int cap = bd->cap ? bd->cap * 2 : 64;
        usp_step *grown = realloc(rs->steps, (size_t)cap * sizeof *grown);
        if (!grown) return usp_fail(USP_EINTERNAL, "out of memory building the schedule");
        rs->steps = grown;
        bd->cap = cap;
    }
    int idx = rs->nsteps, other = st.stream == USP_STREAM_COMPUTE ? USP_STREAM_COMM : USP_STREAM_COMPUTE;
    int dep = -1;
    for (int i = 0; i < reads.n; i++) {
        usp_buf o = list_owner(rs, reads.b[i]);
        int w = bd->last_write[o];
        if (w >= 0 && rs->steps[w].stream == (usp_stream)other && w > dep) dep = w;
    }
    for (int i = 0; i < writes.n; i++) {
        usp_buf o = list_owner(rs, writes.b[i]);
        int w = bd->last_write[o], r = bd->last_read[o][other];
        if (w >= 0 && rs->steps[w].stream == (usp_stream)other && w > dep) dep = w;
        if (r > dep) dep = r;
    }
    st.dep = dep;
    if (st.stream == USP_STREAM_COMM) st.tag = bd->comm_tag++;
    for (int i = 0; i < reads.n; i++) {
        usp_buf o = list_owner(rs, reads.b[i]);
        bd->last_read[o][st.stream] = idx;
        note_use(bd, o, idx);
    }
    for (int i = 0; i < writes.n; i++) {
        usp_buf o = list_owner(rs, writes.b[i]);
        bd->last_write[o] = idx;
        note_use(bd, o, idx);
    }
    rs->steps[rs->nsteps++] = st;
    return USP_OK;
}

static buf_set set_of(int n, ...) {
    buf_set s = {{0}, 0};
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        usp_buf b = (usp_buf)va_arg(ap, int);
        if (b != USP_BUF_NONE) s.b[s.n++] = b;
    }
    va_end(ap);
    return s;
}

/* ---------------------------------------------------------------- pieces */

static const char *a2a_tensor_name(usp_buf b) {
    switch (b) {
    case USP_BUF_Q_IN: return "q";
    case USP_BUF_K_IN: return "k";
    case USP_BUF_V_IN: return "v";
    case USP_BUF_DO_IN: return "do";
    case USP_BUF_O: return "o";
    case USP_BUF_LSE: return "lse";
    case USP_BUF_DQ: return "dq";
    case USP_BUF_DK: return "dk";
    default: return "dv";
    }
}

/* PACK src -> SEND, ALL_TO_ALL SEND -> RECV, UNPACK RECV -> dst. */
static usp_status emit_all_to_all(builder *bd, usp_phase ph, usp_a2a a, usp_buf src, usp_buf dst) {
    const usp_config *c = bd->c;
    const char *t = a2a_tensor_name(src);
    char name[32];
    /* O, dQ, dK, dV travel in the wire dtype (usp_wire_dtype), the rest as held */
    double src_elem = (double)usp_buf_elem_size(buf_role(src), c->dtype);
    double dst_elem = (double)usp_buf_elem_size(buf_role(dst), c->dtype);
    double wire = (a == USP_A2A_O || a == USP_A2A_DKV) ? (double)usp_dtype_size(usp_wire_dtype(c)) : src_elem;
    int u = bd->rs->ulysses_rank;
    double elems = (double)usp_a2a_send_offset(c, a, u, c->ulysses); /* every piece, own too */
    double recv = (double)usp_a2a_recv_offset(c, a, u, c->ulysses);
    double remote = elems - (double)usp_a2a_send_elems(c, a, u, u);

    snprintf(name, sizeof name, "a2a.%s.pack", t);
    usp_step pack = step_new(USP_STEP_PACK, ph, name);
    pack.src[0] = src; pack.dst[0] = USP_BUF_SEND; pack.a2a = a;
    pack.bytes_mem = elems * (src_elem + wire);
    USP_TRY(emit(bd, pack, set_of(1, src), set_of(1, USP_BUF_SEND)));

    snprintf(name, sizeof name, "a2a.%s", t);
    usp_step x = step_new(USP_STEP_ALL_TO_ALL, ph, name);
    x.group = USP_GROUP_ULYSSES; x.a2a = a;
    x.src[0] = USP_BUF_SEND; x.dst[0] = USP_BUF_RECV;
    x.bytes_sent = remote * wire;
    USP_TRY(emit(bd, x, set_of(1, USP_BUF_SEND), set_of(1, USP_BUF_RECV)));

    snprintf(name, sizeof name, "a2a.%s.unpack", t);
    usp_step un = step_new(USP_STEP_UNPACK, ph, name);
    un.src[0] = USP_BUF_RECV; un.dst[0] = dst; un.a2a = a;
    un.bytes_mem = recv * (wire + dst_elem);
    return emit(bd, un, set_of(1, USP_BUF_RECV), set_of(1, dst));
}

static usp_status emit_init(builder *bd, usp_phase ph, const char *name, usp_buf a, usp_buf b) {
    usp_step st = step_new(USP_STEP_INIT, ph, name);
    st.dst[0] = a; st.dst[1] = b;
    st.bytes_mem = buf_bytes(bd, a) + (b != USP_BUF_NONE ? buf_bytes(bd, b) : 0);
    return emit(bd, st, set_of(0), set_of(2, a, b));
}

/* K/V (or dK/dV) to ring rank r+1, from r-1. */
static usp_status emit_sendrecv(builder *bd, usp_phase ph, const char *name, int s,
                                usp_buf s0, usp_buf s1, usp_buf d0, usp_buf d1) {
    const usp_config *c = bd->c;
    usp_step st = step_new(USP_STEP_SENDRECV, ph, name);
    st.group = USP_GROUP_RING;
    st.ring_step = s;
    st.src[0] = s0; st.src[1] = s1; st.dst[0] = d0; st.dst[1] = d1;
    st.send_hops = 1;           /* to ring rank r + 1 */
    st.recv_hops = c->ring - 1; /* from ring rank r - 1 */
    st.bytes_sent = buf_bytes(bd, s0) + buf_bytes(bd, s1);
    return emit(bd, st, set_of(2, s0, s1), set_of(2, d0, d1));
}

/* The parts of the block (local queries of ring rank r, K/V of ring rank j)
 * that something is visible in: up to 2 without a mask (ring_blocks), one
 * per mask layer with one. pairs[i] counts the whole batch; layer[i] is -1
 * when blks[i] says it all. Returns how many. */
static usp_status attention_parts(const usp_config *c, int r, int j, int bwd, usp_block *blks, double *pairs,
                                  int *layer, usp_tile_work *tiles, int *n) {
    *n = 0;
    if (!c->mask) {
        *n = ring_blocks(c, r, j, blks);
        for (int i = 0; i < *n; i++) { pairs[i] = usp_block_pairs(&blks[i]) * c->batch; layer[i] = -1; }
        return USP_OK;
    }
    for (int l = 0; l < usp_mask_layers(c->mask); l++) {
        usp_mask_block mb;
        USP_TRY(usp_mask_block_of(c, r, j, l, &mb));
        if (mb.kind == USP_MBLK_EMPTY) continue;
        blks[*n] = mb.blk;
        pairs[*n] = usp_mask_block_pairs(c, &mb);
        layer[*n] = mb.kind == USP_MBLK_ROWS ? l : -1;
        tiles[*n] = usp_mask_block_tiles(c, &mb, bwd);
        (*n)++;
    }
    return USP_OK;
}

/* The room attention_parts needs for cap parts, in one allocation: blks, then
 * pairs, layer and tiles (parts_of). */
static usp_block *parts_new(int cap) {
    return usp_malloc((size_t)cap * (sizeof(usp_block) + sizeof(double) + sizeof(usp_tile_work) + sizeof(int)));
}
static void parts_of(usp_block *blks, int cap, double **pairs, usp_tile_work **tiles, int **layer) {
    *pairs = (double *)(blks + cap);
    *tiles = (usp_tile_work *)(*pairs + cap);
    *layer = (int *)(*tiles + cap);
}

/* Attention of the local queries against the K/V block of ring rank j, held
 * in (k, v) at block index kv_block: forward + merge, or backward into (dk, dv). */
static usp_status emit_attention(builder *bd, usp_phase ph, const char *prefix, int s, int j,
                                 usp_buf k, usp_buf v, int kv_block, usp_buf dk, usp_buf dv) {
    const usp_config *c = bd->c;
    int cap = c->mask ? usp_mask_layers(c->mask) : 2, n = 0;
    usp_block *blks = parts_new(cap);
    if (!blks) return USP_EINTERNAL;
    double *pairs;
    usp_tile_work *tiles;
    int *layer;
    parts_of(blks, cap, &pairs, &tiles, &layer);
    usp_status status = attention_parts(c, bd->rs->ring_rank, j, ph != USP_PHASE_FWD, blks, pairs, layer, tiles, &n);
    int h0, hu;
    usp_rank_heads(c, bd->rs->ulysses_rank, &h0, &hu);
    double per_pair = (ph == USP_PHASE_FWD ? 4.0 : 10.0) * c->head_dim * hu;
    for (int i = 0; i < n && status == USP_OK; i++) {
        char name[32];
        snprintf(name, sizeof name, "%s.attn", prefix);
        usp_step st = step_new(ph == USP_PHASE_FWD ? USP_STEP_ATTN_FWD : USP_STEP_ATTN_BWD, ph, name);
        st.ring_step = s; st.kv_block = kv_block; st.src_hops = (bd->rs->ring_rank - j + c->ring) % c->ring; st.blk = blks[i];
        st.mask_layer = layer[i];
        st.heads = hu;
        st.src[0] = k; st.src[1] = v;
        st.flops = per_pair * pairs[i];
        if (layer[i] >= 0) /* per-row masks: the kernel's tiles and units (usp/dispatch.h) */
            usp_tile_work_flops(tiles[i], ph != USP_PHASE_FWD, per_pair, &st.tile_flops, &st.loop_flops);
        if (ph == USP_PHASE_FWD) {
            st.dst[0] = USP_BUF_O_BLK; st.dst[1] = USP_BUF_LSE_BLK;
            status = emit(bd, st, set_of(3, USP_BUF_Q, k, v), set_of(2, USP_BUF_O_BLK, USP_BUF_LSE_BLK));
            if (status != USP_OK) break;
            snprintf(name, sizeof name, "%s.merge", prefix);
            usp_step m = step_new(USP_STEP_MERGE, ph, name);
            m.ring_step = s; m.blk = blks[i];
            m.src[0] = USP_BUF_O_BLK; m.src[1] = USP_BUF_LSE_BLK;
            m.dst[0] = USP_BUF_O; m.dst[1] = USP_BUF_LSE;
            double row = (double)c->batch * hu *
                         (c->head_dim * usp_buf_elem_size(USP_ROLE_ACCUM, c->dtype) +
                          usp_buf_elem_size(USP_ROLE_STATS, c->dtype));
            m.bytes_mem = 3 * row * blks[i].q_len; /* read both, write one */
            status = emit(bd, m, set_of(4, USP_BUF_O_BLK, USP_BUF_LSE_BLK, USP_BUF_O, USP_BUF_LSE),
                          set_of(2, USP_BUF_O, USP_BUF_LSE));
        } else {
            st.dst[0] = dk; st.dst[1] = dv;
            status = emit(bd, st,
                          set_of(8, USP_BUF_Q, k, v, USP_BUF_DO, USP_BUF_LSE, USP_BUF_DELTA, dk, dv),
                          set_of(3, USP_BUF_DQ, dk, dv));
        }
    }
    free(blks);
    return status;
}

/* ---------------------------------------------------------------- passes */

static usp_buf ring_k(int s) { return s == 0 ? USP_BUF_K : (s % 2 ? USP_BUF_KB1 : USP_BUF_KB0); }
static usp_buf ring_v(int s) { return s == 0 ? USP_BUF_V : (s % 2 ? USP_BUF_VB1 : USP_BUF_VB0); }

/* Hop s of the travelling K/V: ring_k(s) to r+1, ring_k(s+1) from r-1. */
static usp_status emit_kv_hop(builder *bd, usp_phase ph, int s) {
    char name[32];
    snprintf(name, sizeof name, "ring%d.kv", s);
    return emit_sendrecv(bd, ph, name, s, ring_k(s), ring_v(s), ring_k(s + 1), ring_v(s + 1));
}
static int uses_allgather(const usp_config *c) { return c->ring_impl == USP_RING_ALLGATHER && c->ring > 1; }

static usp_status build_forward(builder *bd) {
    const usp_config *c = bd->c;
    int r = bd->rs->ring_rank, R = c->ring;
    if (c->ulysses > 1) {
        USP_TRY(emit_all_to_all(bd, USP_PHASE_FWD, USP_A2A_Q, USP_BUF_Q_IN, USP_BUF_Q));
        USP_TRY(emit_all_to_all(bd, USP_PHASE_FWD, USP_A2A_KV, USP_BUF_K_IN, USP_BUF_K));
        USP_TRY(emit_all_to_all(bd, USP_PHASE_FWD, USP_A2A_KV, USP_BUF_V_IN, USP_BUF_V));
    }
    USP_TRY(emit_init(bd, USP_PHASE_FWD, "init", USP_BUF_O, USP_BUF_LSE));
    char prefix[24];
    if (uses_allgather(c)) {
        usp_step g = step_new(USP_STEP_ALLGATHER, USP_PHASE_FWD, "allgather.kv");
        g.group = USP_GROUP_RING;
        g.src[0] = USP_BUF_K; g.src[1] = USP_BUF_V; g.dst[0] = USP_BUF_K_ALL; g.dst[1] = USP_BUF_V_ALL;
        g.bytes_sent = (R - 1) * (buf_bytes(bd, USP_BUF_K) + buf_bytes(bd, USP_BUF_V));
        USP_TRY(emit(bd, g, set_of(2, USP_BUF_K, USP_BUF_V), set_of(2, USP_BUF_K_ALL, USP_BUF_V_ALL)));
        for (int j = 0; j < R; j++) {
            snprintf(prefix, sizeof prefix, "block%d", j);
            USP_TRY(emit_attention(bd, USP_PHASE_FWD, prefix, j, j, USP_BUF_K_ALL, USP_BUF_V_ALL, j,
                                   USP_BUF_NONE, USP_BUF_NONE));
        }
    } else {
        for (int s = 0; s < R; s++) {
            snprintf(prefix, sizeof prefix, "ring%d", s);
            if (s < R - 1) USP_TRY(emit_kv_hop(bd, USP_PHASE_FWD, s));
            USP_TRY(emit_attention(bd, USP_PHASE_FWD, prefix, s, (r - s + R) % R, ring_k(s),
                                   ring_v(s), 0, USP_BUF_NONE, USP_BUF_NONE));
        }
    }
    if (c->ulysses > 1) {
        USP_TRY(emit_all_to_all(bd, USP_PHASE_FWD, USP_A2A_O, USP_BUF_O, USP_BUF_O_OUT));
        USP_TRY(emit_all_to_all(bd, USP_PHASE_FWD, USP_A2A_LSE, USP_BUF_LSE, USP_BUF_LSE_OUT));
    }
    return USP_OK;
}

/* dK/dV buffers at ring step s, and where they go after it. */
static usp_buf ring_dk(int R, int s) { return R == 1 || s == R ? USP_BUF_DK : (s % 2 ? USP_BUF_DKB1 : USP_BUF_DKB0); }
static usp_buf ring_dv(int R, int s) { return R == 1 || s == R ? USP_BUF_DV : (s % 2 ? USP_BUF_DVB1 : USP_BUF_DVB0); }

/* Hop s of the travelling dK/dV: ring_dk(s) to r+1, ring_dk(s+1) from r-1. */
static usp_status emit_dkv_hop(builder *bd, int R, int s) {
    char name[32];
    snprintf(name, sizeof name, "ring%d.dkv", s);
    return emit_sendrecv(bd, USP_PHASE_BWD, name, s, ring_dk(R, s), ring_dv(R, s), ring_dk(R, s + 1),
                         ring_dv(R, s + 1));
}

/* The backward ring where each attention adds into the dK/dV the previous
 * hop delivered (dkv_serial, and ring 1 where nothing travels). */
static usp_status build_backward_ring_serial(builder *bd) {
    int r = bd->rs->ring_rank, R = bd->c->ring;
    char prefix[24];
    USP_TRY(emit_init(bd, USP_PHASE_BWD, "init.dkv", ring_dk(R, 0), ring_dv(R, 0)));
    for (int s = 0; s < R; s++) {
        snprintf(prefix, sizeof prefix, "ring%d", s);
        if (s < R - 1) USP_TRY(emit_kv_hop(bd, USP_PHASE_BWD, s));
        USP_TRY(emit_attention(bd, USP_PHASE_BWD, prefix, s, (r - s + R) % R, ring_k(s), ring_v(s),
                               0, ring_dk(R, s), ring_dv(R, s)));
        if (R > 1) USP_TRY(emit_dkv_hop(bd, R, s));
    }
    return USP_OK;
}

/* ring_dk(s), ring_dv(s) += DK_BLK, DV_BLK. */
static usp_status emit_accum(builder *bd, int R, int s) {
    char name[32];
    snprintf(name, sizeof name, "ring%d.accum", s);
    usp_step st = step_new(USP_STEP_ACCUM, USP_PHASE_BWD, name);
    usp_buf dk = ring_dk(R, s), dv = ring_dv(R, s);
    st.ring_step = s;
    st.src[0] = USP_BUF_DK_BLK; st.src[1] = USP_BUF_DV_BLK; st.dst[0] = dk; st.dst[1] = dv;
    st.bytes_mem = 3 * (buf_bytes(bd, USP_BUF_DK_BLK) + buf_bytes(bd, USP_BUF_DV_BLK)); /* read 2, write 1 */
    return emit(bd, st, set_of(4, USP_BUF_DK_BLK, USP_BUF_DV_BLK, dk, dv), set_of(2, dk, dv));
}

/* How many attention steps emit_attention makes for block j (0: fully masked). */
static usp_status attention_count(builder *bd, int j, int *n) {
    const usp_config *c = bd->c;
    int cap = c->mask ? usp_mask_layers(c->mask) : 2;
    usp_block *blks = parts_new(cap);
    if (!blks) return USP_EINTERNAL;
    double *pairs;
    usp_tile_work *tiles;
    int *layer;
    parts_of(blks, cap, &pairs, &tiles, &layer);
    usp_status st = attention_parts(c, bd->rs->ring_rank, j, 0, blks, pairs, layer, tiles, n);
    free(blks);
    return st;
}

/* Double-buffered dK/dV (see the top of this file). Hop s-1 is listed after
 * kv(s), so the K/V that attention s+1 needs goes first on the comm stream. */
static usp_status build_backward_ring(builder *bd) {
    int r = bd->rs->ring_rank, R = bd->c->ring;
    if (R == 1 || bd->c->dkv_serial) return build_backward_ring_serial(bd);
    char prefix[24], name[32];
    USP_TRY(emit_init(bd, USP_PHASE_BWD, "init.dkv", ring_dk(R, 0), ring_dv(R, 0)));
    for (int s = 0; s < R; s++) {
        snprintf(prefix, sizeof prefix, "ring%d", s);
        if (s < R - 1) USP_TRY(emit_kv_hop(bd, USP_PHASE_BWD, s));
        int j = (r - s + R) % R;
        if (s == 0) { /* nothing travels in yet: straight into the ring buffers */
            USP_TRY(emit_attention(bd, USP_PHASE_BWD, prefix, s, j, ring_k(s), ring_v(s), 0,
                                   ring_dk(R, 0), ring_dv(R, 0)));
            continue;
        }
        USP_TRY(emit_dkv_hop(bd, R, s - 1));
        int parts;
        USP_TRY(attention_count(bd, j, &parts));
        if (parts == 0) continue; /* fully masked: the dK/dV pass through unchanged */
        snprintf(name, sizeof name, "%s.init", prefix);
        USP_TRY(emit_init(bd, USP_PHASE_BWD, name, USP_BUF_DK_BLK, USP_BUF_DV_BLK));
        USP_TRY(emit_attention(bd, USP_PHASE_BWD, prefix, s, j, ring_k(s), ring_v(s), 0, USP_BUF_DK_BLK,
                               USP_BUF_DV_BLK));
        USP_TRY(emit_accum(bd, R, s));
    }
    return emit_dkv_hop(bd, R, R - 1); /* home: the one hop nothing hides */
}

static usp_status build_backward_allgather(builder *bd) {
    int R = bd->c->ring;
    char prefix[24];
    USP_TRY(emit_init(bd, USP_PHASE_BWD, "init.dkv", USP_BUF_DK_ALL, USP_BUF_DV_ALL));
    for (int j = 0; j < R; j++) {
        snprintf(prefix, sizeof prefix, "block%d", j);
        USP_TRY(emit_attention(bd, USP_PHASE_BWD, prefix, j, j, USP_BUF_K_ALL, USP_BUF_V_ALL, j,
                               USP_BUF_DK_ALL, USP_BUF_DV_ALL));
    }
    usp_step rs = step_new(USP_STEP_REDUCE_SCATTER, USP_PHASE_BWD, "reduce_scatter.dkv");
    rs.group = USP_GROUP_RING;
    rs.src[0] = USP_BUF_DK_ALL; rs.src[1] = USP_BUF_DV_ALL; rs.dst[0] = USP_BUF_DK; rs.dst[1] = USP_BUF_DV;
    rs.bytes_sent = (R - 1) * (buf_bytes(bd, USP_BUF_DK) + buf_bytes(bd, USP_BUF_DV));
    return emit(bd, rs, set_of(2, USP_BUF_DK_ALL, USP_BUF_DV_ALL), set_of(2, USP_BUF_DK, USP_BUF_DV));
}

static usp_status build_backward(builder *bd) {
    const usp_config *c = bd->c;
    if (c->ulysses > 1)
        USP_TRY(emit_all_to_all(bd, USP_PHASE_BWD, USP_A2A_Q, USP_BUF_DO_IN, USP_BUF_DO));
    usp_step prep = step_new(USP_STEP_BWD_PREP, USP_PHASE_BWD, "prep");
    prep.src[0] = USP_BUF_O; prep.src[1] = USP_BUF_DO; prep.dst[0] = USP_BUF_DELTA;
    prep.bytes_mem = buf_bytes(bd, USP_BUF_O) + buf_bytes(bd, USP_BUF_DO) + buf_bytes(bd, USP_BUF_DELTA);
    USP_TRY(emit(bd, prep, set_of(2, USP_BUF_O, USP_BUF_DO), set_of(1, USP_BUF_DELTA)));
    USP_TRY(emit_init(bd, USP_PHASE_BWD, "init.dq", USP_BUF_DQ, USP_BUF_NONE));
    USP_TRY(uses_allgather(c) ? build_backward_allgather(bd) : build_backward_ring(bd));
    if (c->ulysses > 1) {
        USP_TRY(emit_all_to_all(bd, USP_PHASE_BWD, USP_A2A_O, USP_BUF_DQ, USP_BUF_DQ_OUT));
        USP_TRY(emit_all_to_all(bd, USP_PHASE_BWD, USP_A2A_DKV, USP_BUF_DK, USP_BUF_DK_OUT));
        USP_TRY(emit_all_to_all(bd, USP_PHASE_BWD, USP_A2A_DKV, USP_BUF_DV, USP_BUF_DV_OUT));
    }
    return USP_OK;
}

/* ---------------------------------------------------------------- assembly */

static void declare_buffers(const usp_config *c, rank_list *rs) {
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        rs->bufs[b] = (usp_buf_info){buf_names[b], buf_elems(c, rs->ulysses_rank, b), buf_role(b), USP_BUF_NONE, -1, -1};
    }
    if (c->ulysses == 1) { /* no all-to-all: the head-sharded tensors are the shards */
        static const usp_buf pairs[][2] = {
            {USP_BUF_Q, USP_BUF_Q_IN}, {USP_BUF_K, USP_BUF_K_IN}, {USP_BUF_V, USP_BUF_V_IN},
            {USP_BUF_DO, USP_BUF_DO_IN}, {USP_BUF_O_OUT, USP_BUF_O}, {USP_BUF_LSE_OUT, USP_BUF_LSE},
            {USP_BUF_DQ_OUT, USP_BUF_DQ}, {USP_BUF_DK_OUT, USP_BUF_DK}, {USP_BUF_DV_OUT, USP_BUF_DV}};
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
            rs->bufs[pairs[i][0]].alias = pairs[i][1];
    }
}

/* Inputs live from the start, outputs to the end; unused buffers get 0 elements. */
static void close_lifetimes(rank_list *rs, int backward) {
    static const usp_buf inputs[] = {USP_BUF_Q_IN, USP_BUF_K_IN, USP_BUF_V_IN, USP_BUF_DO_IN};
    static const usp_buf outputs[] = {USP_BUF_O_OUT, USP_BUF_LSE_OUT, USP_BUF_DQ_OUT,
                                      USP_BUF_DK_OUT, USP_BUF_DV_OUT};
    for (size_t i = 0; i < 4; i++) {
        if (inputs[i] == USP_BUF_DO_IN && !backward) continue;
        usp_buf_info *bi = &rs->bufs[list_owner(rs, inputs[i])];
        bi->first_step = 0;
        if (bi->last_step < 0) bi->last_step = 0;
    }
    for (size_t i = 0; i < 5; i++) {
        if (i >= 2 && !backward) continue;
        usp_buf_info *bi = &rs->bufs[list_owner(rs, outputs[i])];
        if (bi->first_step < 0) bi->first_step = 0;
        bi->last_step = rs->nsteps - 1;
    }
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        usp_buf_info *bi = &rs->bufs[b];
        if (bi->alias != USP_BUF_NONE) {
            if (rs->bufs[list_owner(rs, b)].first_step < 0) bi->elems = 0;
        } else if (bi->first_step < 0) {
            bi->elems = 0;
        }
    }
}

/* Steps a rank can need: forward a2a 9 + 6, init, R ring steps of at most
 * 3 (sendrecv, attention, merge); backward a2a 3 + 9, prep, 2 inits, R ring
 * steps of at most 5 (kv, dkv, init, attention, accum; a masked attention
 * one step per mask layer), or R attentions + reduce-scatter. Reserving it
 * once keeps large worlds from re-copying growing arrays. */
static int steps_bound(const usp_config *c) {
    return (c->mask ? 3 * usp_mask_layers(c->mask) + 5 : 8) * c->ring + 40;
}

static usp_status build_rank(const usp_config *c, int rank, int backward, rank_list *rs) {
    builder bd = {.c = c, .rs = rs, .cap = steps_bound(c)};
    rs->steps = usp_malloc((size_t)bd.cap * sizeof *rs->steps);
    if (!rs->steps) return USP_EINTERNAL;
    rs->rank = rank;
    usp_coords_of(c, rank, &rs->ring_rank, &rs->ulysses_rank);
    declare_buffers(c, rs);
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        bd.last_write[b] = -1;
        bd.last_read[b][0] = bd.last_read[b][1] = -1;
    }
    USP_TRY(build_forward(&bd));
    rs->nfwd = rs->nsteps;
    if (backward) USP_TRY(build_backward(&bd));
    close_lifetimes(rs, backward);
    return USP_OK;
}

/* ---------------------------------------------------------------- storage */

/* The pool: every distinct step once, found again by a hash of its bytes
 * (steps start from a zeroed struct in step_new, so equal steps have equal
 * bytes). `slots` is an open-addressing table of pool indices + 1. */
typedef struct {
    uint32_t *slots;
    size_t nslots;
} pool_index;

static uint64_t step_hash(const usp_step *st) {
    const unsigned char *p = (const unsigned char *)st;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < sizeof *st; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static usp_status pool_grow_index(pool_index *px, const usp_schedule *s) {
    size_t n = px->nslots ? 2 * px->nslots : 1024;
    uint32_t *slots = usp_calloc(n, sizeof *slots);
    if (!slots) return USP_EINTERNAL;
    for (int k = 0; k < s->npool; k++) {
        size_t h = (size_t)step_hash(&s->pool[k]) & (n - 1);
        while (slots[h]) h = (h + 1) & (n - 1);
        slots[h] = (uint32_t)k + 1;
    }
    free(px->slots);
    px->slots = slots;
    px->nslots = n;
    return USP_OK;
}

static usp_status pool_append(usp_schedule *s, const usp_step *st) {
    if (s->npool == s->pool_cap) {
        int cap = s->pool_cap ? 2 * s->pool_cap : 256;
        usp_step *grown = realloc(s->pool, (size_t)cap * sizeof *grown);
        if (!grown) return usp_fail(USP_EINTERNAL, "out of memory building the schedule");
        s->pool = grown;
        s->pool_cap = cap;
    }
    s->pool[s->npool++] = *st;
    return USP_OK;
}

/* The pool index of a step equal to st, added if new. */
static usp_status pool_intern(usp_schedule *s, pool_index *px, const usp_step *st, uint32_t *out) {
    if (2 * ((size_t)s->npool + 1) > px->nslots) USP_TRY(pool_grow_index(px, s));
    size_t h = (size_t)step_hash(st) & (px->nslots - 1);
    for (; px->slots[h]; h = (h + 1) & (px->nslots - 1))
        if (memcmp(&s->pool[px->slots[h] - 1], st, sizeof *st) == 0) { *out = px->slots[h] - 1; return USP_OK; }
    USP_TRY(pool_append(s, st));
    px->slots[h] = (uint32_t)s->npool;
    *out = (uint32_t)s->npool - 1;
    return USP_OK;
}

static usp_status add_list(usp_schedule *s, uint32_t **list) {
    uint32_t **grown = realloc(s->lists, ((size_t)s->nlists + 1) * sizeof *grown);
    if (!grown) { free(*list); *list = NULL; return usp_fail(USP_EINTERNAL, "out of memory building the schedule"); }
    s->lists = grown;
    s->lists[s->nlists++] = *list;
    return USP_OK;
}

/* Points every rank at the pool (it moves while it grows). */
static void point_at_pool(usp_schedule *s) {
    for (int g = 0; g < s->world; g++) s->ranks[g].pool = s->pool;
}

/* A rank's whole list must equal its ring rank's shared one: checked on
 * small worlds, where building every rank costs little, so that a builder
 * that starts to depend on the ulysses rank fails loudly. */
enum { SHARE_CHECK_MAX_WORLD = 64 };

static usp_status check_shared(const usp_config *c, int backward, const rank_list *rep, int rank) {
    rank_list own = {0};
    usp_status st = build_rank(c, rank, backward, &own);
    if (st == USP_OK && (own.nsteps != rep->nsteps || own.nfwd != rep->nfwd ||
                         memcmp(own.steps, rep->steps, (size_t)own.nsteps * sizeof *own.steps) != 0))
        st = usp_fail(USP_EINTERNAL, "schedule: rank %d's steps differ from rank %d's beyond their peers",
                      rank, rep->rank);
    free(own.steps);
    return st;
}

/* An uneven head split (usp/layout.h): the ulysses ranks of ring rank r
 * differ in sizes, bytes and FLOPs, so each gets its own list (the pool
 * still keeps each distinct step once). */
static usp_status build_ring_rank_uneven(usp_schedule *s, pool_index *px, int r) {
    const usp_config *c = &s->cfg;
    usp_status st = USP_OK;
    for (int u = 0; st == USP_OK && u < c->ulysses; u++) {
        rank_list own = {0};
        uint32_t *list = NULL;
        int g = usp_rank_of(c, r, u);
        st = build_rank(c, g, s->backward, &own);
        if (st == USP_OK && !(list = usp_malloc(((size_t)own.nsteps + 1) * sizeof *list))) st = USP_EINTERNAL;
        for (int i = 0; st == USP_OK && i < own.nsteps; i++) st = pool_intern(s, px, &own.steps[i], &list[i]);
        if (st == USP_OK) st = add_list(s, &list);
        if (st == USP_OK) {
            usp_rank_schedule *rs = &s->ranks[g];
            rs->rank = g;
            rs->ring_rank = r;
            rs->ulysses_rank = u;
            rs->nsteps = own.nsteps;
            rs->nfwd = own.nfwd;
            rs->index = list;
            memcpy(rs->bufs, own.bufs, sizeof rs->bufs);
        } else {
            free(list);
        }
        free(own.steps);
    }
    return st;
}

static usp_status build_ring_rank(usp_schedule *s, pool_index *px, int r) {
    const usp_config *c = &s->cfg;
    if (!usp_heads_even(c)) return build_ring_rank_uneven(s, px, r);
    rank_list rep = {0};
    uint32_t *list = NULL;
    usp_status st = build_rank(c, usp_rank_of(c, r, 0), s->backward, &rep);
    if (st == USP_OK && !(list = usp_malloc(((size_t)rep.nsteps + 1) * sizeof *list))) st = USP_EINTERNAL;
    for (int i = 0; st == USP_OK && i < rep.nsteps; i++) st = pool_intern(s, px, &rep.steps[i], &list[i]);
    if (st == USP_OK) st = add_list(s, &list);
    for (int u = 1; st == USP_OK && u < c->ulysses && s->world <= SHARE_CHECK_MAX_WORLD; u++)
        st = check_shared(c, s->backward, &rep, usp_rank_of(c, r, u));
    for (int u = 0; st == USP_OK && u < c->ulysses; u++) {
        int g = usp_rank_of(c, r, u);
        usp_rank_schedule *rs = &s->ranks[g];
        rs->rank = g;
        rs->ring_rank = r;
        rs->ulysses_rank = u;
        rs->nsteps = rep.nsteps;
        rs->nfwd = rep.nfwd;
        rs->index = list;
        memcpy(rs->bufs, rep.bufs, sizeof rs->bufs);
    }
    if (st != USP_OK) free(list);
    free(rep.steps);
    return st;
}

usp_status usp_schedule_build(const usp_config *cfg, int backward, usp_schedule *out) {
    memset(out, 0, sizeof *out);
    USP_TRY(usp_config_validate(cfg));
    out->cfg = *cfg;
    out->world = usp_world(cfg);
    out->backward = backward;
    out->ranks = usp_calloc((size_t)out->world, sizeof *out->ranks);
    if (!out->ranks) return USP_EINTERNAL;
    pool_index px = {0};
    usp_status st = USP_OK;
    for (int r = 0; r < cfg->ring && st == USP_OK; r++) st = build_ring_rank(out, &px, r);
    free(px.slots);
    if (st != USP_OK) { usp_schedule_free(out); return st; }
    point_at_pool(out);
    return USP_OK;
}

usp_status usp_schedule_build_rank(const usp_config *cfg, int rank, int backward, usp_step **steps,
                                   int *nsteps, int *nfwd) {
    USP_TRY(usp_config_validate(cfg));
    if (rank < 0 || rank >= usp_world(cfg)) return usp_fail(USP_EINVAL, "rank %d: world is %d", rank, usp_world(cfg));
    rank_list rl = {0};
    usp_status st = build_rank(cfg, rank, backward, &rl);
    if (st != USP_OK) { free(rl.steps); return st; }
    *steps = rl.steps;
    *nsteps = rl.nsteps;
    *nfwd = rl.nfwd;
    return USP_OK;
}

usp_status usp_rank_peak_bytes(const usp_config *cfg, int rank, int backward, double *bytes) {
    *bytes = 0;
    USP_TRY(usp_config_validate(cfg));
    if (rank < 0 || rank >= usp_world(cfg)) return usp_fail(USP_EINVAL, "rank %d: world is %d", rank, usp_world(cfg));
    rank_list rl = {0};
    usp_status st = build_rank(cfg, rank, backward, &rl);
    if (st == USP_OK) {
        usp_rank_schedule rs = {.rank = rank, .nsteps = rl.nsteps, .nfwd = rl.nfwd};
        memcpy(rs.bufs, rl.bufs, sizeof rs.bufs);
        *bytes = usp_peak_bytes(&rs, cfg->dtype);
    }
    free(rl.steps);
    return st;
}

usp_status usp_schedule_init_empty(const usp_config *cfg, int world, usp_schedule *out) {
    memset(out, 0, sizeof *out);
    out->cfg = *cfg;
    out->world = world;
    out->ranks = usp_calloc((size_t)world, sizeof *out->ranks);
    if (!out->ranks) return USP_EINTERNAL;
    for (int g = 0; g < world; g++) {
        out->ranks[g].rank = g;
        usp_coords_of(cfg, g, &out->ranks[g].ring_rank, &out->ranks[g].ulysses_rank);
        for (int b = 0; b < USP_BUF_COUNT; b++)
            out->ranks[g].bufs[b] = (usp_buf_info){buf_names[b], 0, buf_role(b), USP_BUF_NONE, -1, -1};
    }
    return USP_OK;
}

usp_status usp_schedule_set_steps(usp_schedule *s, int rank, const usp_step *steps, int nsteps, int nfwd) {
    if (rank < 0 || rank >= s->world) return usp_fail(USP_EINVAL, "rank %d: world is %d", rank, s->world);
    uint32_t *list = usp_malloc(((size_t)nsteps + 1) * sizeof *list);
    if (!list) return USP_EINTERNAL;
    for (int i = 0; i < nsteps; i++) {
        usp_status st = pool_append(s, &steps[i]);
        if (st != USP_OK) { free(list); return st; }
        list[i] = (uint32_t)s->npool - 1;
    }
    USP_TRY(add_list(s, &list));
    usp_rank_schedule *rs = &s->ranks[rank];
    rs->nsteps = nsteps;
    rs->nfwd = nfwd;
    rs->index = list;
    point_at_pool(s);
    return USP_OK;
}

void usp_schedule_free(usp_schedule *s) {
    for (int i = 0; i < s->nlists; i++) free(s->lists[i]);
    free(s->lists);
    free(s->pool);
    free(s->ranks);
    memset(s, 0, sizeof *s);
}

int usp_step_send_peer(const usp_config *c, int rank, const usp_step *st) {
    int r, u;
    usp_coords_of(c, rank, &r, &u);
    return usp_rank_of(c, (r + st->send_hops) % c->ring, u);
}

int usp_step_recv_peer(const usp_config *c, int rank, const usp_step *st) {
    int r, u;
    usp_coords_of(c, rank, &r, &u);
    return usp_rank_of(c, (r + st->recv_hops) % c->ring, u);
}

int usp_step_src_block(const usp_config *c, int rank, const usp_step *st) {
    int r, u;
    usp_coords_of(c, rank, &r, &u);
    return (r - st->src_hops % c->ring + c->ring) % c->ring;
}

/* Live bytes at the busiest step: each owner adds its bytes at its first
 * step and takes them away after its last (O(steps + buffers)). */
double usp_peak_bytes(const usp_rank_schedule *rs, usp_dtype dtype) {
    int n = rs->nsteps ? rs->nsteps : 1;
    double *delta = usp_calloc((size_t)n + 1, sizeof *delta);
    if (!delta) return 0;
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        const usp_buf_info *bi = &rs->bufs[b];
        if (bi->alias != USP_BUF_NONE || bi->elems == 0) continue;
        int first = bi->first_step < 0 ? 0 : bi->first_step, last = bi->last_step;
        if (last < first || first >= n) continue;
        if (last >= n) last = n - 1;
        double bytes = (double)bi->elems * usp_buf_elem_size(bi->role, dtype);
        delta[first] += bytes;
        delta[last + 1] -= bytes;
    }
    double live = 0, peak = 0;
    for (int i = 0; i < n; i++) {
        live += delta[i];
        if (live > peak) peak = live;
    }
    free(delta);
    return peak;
}

const char *usp_step_kind_name(usp_step_kind k) {
    static const char *names[USP_STEP_KIND_COUNT] = {
        "pack", "all_to_all", "unpack", "sendrecv", "allgather", "reduce_scatter",
        "init", "attn_fwd", "merge", "bwd_prep", "attn_bwd", "accum"};
    return (k >= 0 && k < USP_STEP_KIND_COUNT) ? names[k] : "?";
}

int usp_step_memory_bound(usp_step_kind k) {
    return k == USP_STEP_PACK || k == USP_STEP_UNPACK || k == USP_STEP_MERGE || k == USP_STEP_INIT ||
           k == USP_STEP_BWD_PREP || k == USP_STEP_ACCUM;
}

double usp_step_pairs(const usp_config *c, const usp_step *st) {
    if (st->kind != USP_STEP_ATTN_FWD && st->kind != USP_STEP_ATTN_BWD) return 0;
    double per_pair = (st->kind == USP_STEP_ATTN_FWD ? 4.0 : 10.0) * c->head_dim *
                      (st->heads > 0 ? st->heads : usp_heads_per_rank(c)) * c->batch;
    return st->flops / per_pair;
}

int usp_step_partial(const usp_config *c, const usp_step *st) {
    double pairs = usp_step_pairs(c, st);
    return pairs > 0 && pairs < (double)st->blk.q_len * st->blk.kv_len;
}

double usp_schedule_imbalance(const usp_schedule *s) {
    double sum = 0, max = 0;
    for (int g = 0; g < s->world; g++) {
        double f = 0;
        const usp_rank_schedule *rs = &s->ranks[g];
        for (int i = 0; i < rs->nfwd; i++)
            if (usp_rank_step(rs, i)->kind == USP_STEP_ATTN_FWD) f += usp_rank_step(rs, i)->flops;
        sum += f;
        if (f > max) max = f;
    }
    return sum > 0 ? max / (sum / s->world) : 1.0;
}

usp_step_kind usp_step_kind_of(const char *name) {
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++)
        if (strcmp(usp_step_kind_name((usp_step_kind)k), name) == 0) return (usp_step_kind)k;
    return USP_STEP_KIND_COUNT;
}
