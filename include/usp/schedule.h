/* usp/schedule.h: the USP schedule, as data.
 *
 * usp_schedule_build() turns a configuration into one ordered list of steps
 * per rank. It knows nothing of SimGrid, CUDA or time: the in-process
 * executor (ref/), the simulator (sim/) and the GPU executor (gpu/) all
 * interpret the same lists.
 *
 * Execution model, the same for every executor:
 *   - each rank has two in-order streams, COMPUTE and COMM;
 *   - a step starts after the previous step of its own stream and after
 *     `dep` (an earlier step on the other stream, or -1);
 *   - list order is a valid sequential order (deps always point backwards),
 *     so an executor with one thread per rank may simply run the list.
 *
 * Shapes (B batch, L seq, U ulysses, R ring, W = U*R, Ls = L/W, Lr = L/R,
 * Hu query heads and Hkvu K/V heads of the ulysses rank: H/U and Hkv/U, or 1, when the
 * split is even, its own share when not, usp/layout.h):
 *   Q_IN, DO_IN, O_OUT, DQ_OUT  (B, Ls, H,   D)   sequence-sharded
 *   K_IN, V_IN, DK_OUT, DV_OUT  (B, Ls, Hkv, D)
 *   LSE_OUT                     (B, H, Ls)
 *   Q, DO, O, O_BLK, DQ         (B, Lr, Hu,  D)   head-sharded, ring-local tokens
 *   LSE, LSE_BLK, DELTA         (B, Hu, Lr)
 *   K, V, KB0..DVB1, DK, DV     (B, Lr, Hkvu, D)  one ring block
 *   DK_BLK, DV_BLK              (B, Lr, Hkvu, D)  one ring step's dK/dV (ACCUM)
 *   K_ALL .. DV_ALL             (R, B, Lr, Hkvu, D) all ring blocks (allgather)
 *   SEND, RECV                  all-to-all staging: U pieces, piece u for ulysses rank u
 */
#ifndef USP_SCHEDULE_H
#define USP_SCHEDULE_H

#include <stdint.h>
#include <stdio.h>
#include "usp/config.h"
#include "usp/rowmask.h"

typedef enum {
    USP_BUF_NONE = -1,
    USP_BUF_Q_IN, USP_BUF_K_IN, USP_BUF_V_IN, USP_BUF_DO_IN,
    USP_BUF_Q, USP_BUF_K, USP_BUF_V,           /* own block after the all-to-all */
    USP_BUF_KB0, USP_BUF_VB0, USP_BUF_KB1, USP_BUF_VB1, /* ring double buffer */
    USP_BUF_K_ALL, USP_BUF_V_ALL,
    USP_BUF_O_BLK, USP_BUF_LSE_BLK, USP_BUF_O, USP_BUF_LSE,
    USP_BUF_DO, USP_BUF_DELTA, USP_BUF_DQ,
    USP_BUF_DKB0, USP_BUF_DVB0, USP_BUF_DKB1, USP_BUF_DVB1, /* travelling dK/dV */
    USP_BUF_DK, USP_BUF_DV,                    /* dK/dV of the own block, home */
    USP_BUF_DK_BLK, USP_BUF_DV_BLK,            /* one ring step's dK/dV, added into the travelling pair */
    USP_BUF_DK_ALL, USP_BUF_DV_ALL,
    USP_BUF_SEND, USP_BUF_RECV,
    USP_BUF_O_OUT, USP_BUF_LSE_OUT, USP_BUF_DQ_OUT, USP_BUF_DK_OUT, USP_BUF_DV_OUT,
    USP_BUF_COUNT
} usp_buf;

/* What a buffer holds decides its element type on a given executor:
 * DATA in the input dtype; ACCUM and STATS in fp32 for 16-bit dtypes. */
typedef enum { USP_ROLE_DATA, USP_ROLE_ACCUM, USP_ROLE_STATS } usp_buf_role;

typedef struct {
    const char *name;   /* "q_in", "kb0", ... */
    long elems;         /* 0: unused by this schedule */
    usp_buf_role role;
    usp_buf alias;      /* USP_BUF_NONE, or the buffer whose memory this one shares */
    int first_step, last_step; /* lifetime in the forward+backward list, -1 if unused */
} usp_buf_info;

typedef enum {
    USP_STEP_PACK,           /* compute: src -> SEND, pieces by a2a pattern */
    USP_STEP_ALL_TO_ALL,     /* comm: SEND -> RECV inside the ulysses group */
    USP_STEP_UNPACK,         /* compute: RECV -> dst (DK/DV: sums replicas) */
    USP_STEP_SENDRECV,       /* comm: src[] to ring next, dst[] from ring prev */
    USP_STEP_ALLGATHER,      /* comm: src[i] (one block) -> dst[i] (R blocks), ring group */
    USP_STEP_REDUCE_SCATTER, /* comm: src[i] (R blocks) -> dst[i] (own block, summed) */
    USP_STEP_INIT,           /* compute: dst[] = 0, LSE buffers = -inf */
    USP_STEP_ATTN_FWD,       /* compute: (O_BLK, LSE_BLK) rows = attn(Q rows, K/V block) */
    USP_STEP_MERGE,          /* compute: (O, LSE) rows <- merge with (O_BLK, LSE_BLK) */
    USP_STEP_BWD_PREP,       /* compute: DELTA = rowsum(O * DO) */
    USP_STEP_ATTN_BWD,       /* compute: DQ rows, dK/dV block rows += grads */
    USP_STEP_ACCUM,          /* compute: dst[i] += src[i], whole ACCUM buffers (dK/dV) */
    USP_STEP_KIND_COUNT
} usp_step_kind;

typedef enum { USP_STREAM_COMPUTE, USP_STREAM_COMM } usp_stream;
typedef enum { USP_GROUP_NONE, USP_GROUP_ULYSSES, USP_GROUP_RING } usp_group;
typedef enum { USP_PHASE_FWD, USP_PHASE_BWD } usp_phase;

/* The data movement around an all-to-all, by tensor. */
typedef enum {
    USP_A2A_NONE,
    USP_A2A_Q,   /* (B,Ls,H,D)   -> (B,Lr,Hu,D): Q and dO */
    USP_A2A_KV,  /* (B,Ls,Hkv,D) -> (B,Lr,Hkvu,D): K and V, replicated if Hkv < U */
    USP_A2A_O,   /* (B,Lr,Hu,D)  -> (B,Ls,H,D): O and dQ */
    USP_A2A_LSE, /* (B,Hu,Lr)    -> (B,H,Ls) */
    USP_A2A_DKV  /* (B,Lr,Hkvu,D)-> (B,Ls,Hkv,D): dK and dV, replicas summed */
} usp_a2a;

/* Which (query, key) pairs one attention step covers. Rows are local:
 * query rows [q_begin, q_begin+q_len) of Q; key rows [kv_begin, kv_begin+kv_len)
 * of the visiting block. With causal set, query i (counted from q_begin) sees
 * key j (counted from kv_begin) iff j <= i + diag; otherwise every pair. */
typedef struct {
    int q_begin, q_len, kv_begin, kv_len;
    int causal, diag;
} usp_block;

/* The block's predicate row-wise (usp/rowmask.h's, without arrays): local
 * row i (from q_begin) sees local keys [*lo, *hi) (from kv_begin). */
static inline void usp_block_row(const usp_block *b, long i, long *lo, long *hi) {
    usp_key_interval iv = usp_row_keys(NULL, NULL, b->q_len, 0, (int)i, b->kv_len, b->causal, b->diag);
    *lo = iv.lo;
    *hi = iv.hi;
}

typedef struct {
    usp_step_kind kind;
    usp_stream stream;
    usp_phase phase;
    usp_group group;
    usp_buf src[2], dst[2];  /* USP_BUF_NONE where unused */
    usp_a2a a2a;             /* PACK / UNPACK */
    int send_hops, recv_hops;/* SENDRECV: ring ranks ahead of this one of the peer sent
                                to (1) and received from: usp_step_send_peer() */
    int ring_step;           /* -1 outside the ring */
    int kv_block;            /* ATTN: which block of K/V_ALL (0 for one-block buffers) */
    int src_hops;            /* ATTN: ring ranks behind this one of the rank whose tokens
                                that block holds: usp_step_src_block() */
    usp_block blk;           /* ATTN: rows and keys; with mask_layer >= 0 their bounding box */
    int mask_layer;          /* ATTN: -1, blk says it all; else the rows see the per-row
                              * intervals of this layer of cfg->mask between this ring rank's
                              * queries and the source block (usp_step_row_mask) */
    int heads;               /* ATTN: query heads of the rank (H/U; its own share when the
                              * head split is uneven, usp/layout.h); 0 in hand-made steps */
    int tag;                 /* matches a comm step across the ranks of its group */
    int dep;                 /* earlier step on the other stream, or -1 */
    double bytes_sent;       /* bytes this rank puts on links */
    double bytes_mem;        /* bytes read + written in device memory (memory-bound steps) */
    double flops;            /* attention FLOPs: 4*D per visible pair fwd, 10*D bwd, x B*Hu */
    double tile_flops;       /* ATTN with mask_layer >= 0: the FLOPs of the kernel's tiles that
                              * see a pair, counted whole (usp/dispatch.h, usp_tile_work); 0 else */
    double loop_flops;       /* with tile_flops: the FLOPs of one token of loop in every unit of
                              * the kernel (x a profile's short length: the units' setup) */
    char name[40];           /* "fwd.a2a.q", "fwd.ring1.attn", ... */
} usp_step;

/* Storage. A step says nothing that depends on which rank runs it: peers
 * and the source block are ring offsets, turned into ranks by
 * usp_step_send_peer / usp_step_recv_peer / usp_step_src_block. The schedule
 * keeps each distinct step once (`pool`); a rank's list is indices into it,
 * and the ranks of one ring rank (every ulysses rank) share one index list:
 * their lists differ only in their peers, which are relative. With the
 * zigzag layout every ring rank's steps come from the same few kinds of
 * ring step, so the pool holds O(ring) steps and the schedule takes
 * 4 bytes per step of each ring rank (O(ring^2)), not a whole step per
 * step of each rank (O(world x ring)). Read a step with usp_rank_step(). */
typedef struct {
    int rank, ring_rank, ulysses_rank;
    int nsteps, nfwd;        /* steps [0, nfwd) are the forward pass */
    const usp_step *pool;    /* the schedule's distinct steps */
    const uint32_t *index;   /* [nsteps]: step i is pool[index[i]]; shared */
    usp_buf_info bufs[USP_BUF_COUNT];
} usp_rank_schedule;

typedef struct {
    usp_config cfg;
    int world;
    int backward;            /* 1 if the backward steps were built */
    usp_rank_schedule *ranks;/* [world] */
    usp_step *pool;          /* [npool] distinct steps */
    int npool, pool_cap;
    uint32_t **lists;        /* [nlists] index lists, owned here */
    int nlists;
} usp_schedule;

/* Step i of a rank's list (0 <= i < nsteps). */
static inline const usp_step *usp_rank_step(const usp_rank_schedule *rs, int i) {
    return &rs->pool[rs->index[i]];
}

/* Builds every rank's steps (forward, and backward when `backward`).
 * Validates cfg first. Free with usp_schedule_free. */
usp_status usp_schedule_build(const usp_config *cfg, int backward, usp_schedule *out);
void usp_schedule_free(usp_schedule *s);

/* One rank's whole list, one usp_step per step, as the builder makes it
 * (what usp_schedule_build stores compactly): *steps is malloc'd, the
 * caller frees it. For a process that needs only its own rank, and for
 * the tests of the compact form. */
usp_status usp_schedule_build_rank(const usp_config *cfg, int rank, int backward, usp_step **steps,
                                   int *nsteps, int *nfwd);

/* usp_peak_bytes of one rank, built alone (usp_schedule_build_rank): for a
 * caller that needs one rank's peak of a long ring without every rank's list. */
usp_status usp_rank_peak_bytes(const usp_config *cfg, int rank, int backward, double *bytes);

/* Schedules written by hand (tests): an empty schedule of `world` ranks for
 * cfg (not validated), then each rank's steps, copied; a rank left without
 * steps has none. */
usp_status usp_schedule_init_empty(const usp_config *cfg, int world, usp_schedule *out);
usp_status usp_schedule_set_steps(usp_schedule *s, int rank, const usp_step *steps, int nsteps, int nfwd);

/* The global ranks a SENDRECV step of `rank` sends to and receives from,
 * and the ring rank whose K/V an attention step of `rank` attends to. */
int usp_step_send_peer(const usp_config *c, int rank, const usp_step *st);
int usp_step_recv_peer(const usp_config *c, int rank, const usp_step *st);
int usp_step_src_block(const usp_config *c, int rank, const usp_step *st);

/* Follows aliases to the buffer that owns the memory. */
usp_buf usp_buf_owner(const usp_rank_schedule *rs, usp_buf b);

/* Element size of a buffer on an executor whose data dtype is `dtype`. */
size_t usp_buf_elem_size(usp_buf_role role, usp_dtype dtype);

/* Bytes of live buffers at the busiest step (owners only, lifetimes from the list). */
double usp_peak_bytes(const usp_rank_schedule *rs, usp_dtype dtype);

/* Members of the group of `rank`, in group order (ulysses rank or ring rank). */
int usp_group_size(const usp_config *c, usp_group g);
int usp_group_member(const usp_config *c, usp_group g, int rank, int index);
int usp_group_index(const usp_config *c, usp_group g, int rank);

/* Elements of one all-to-all piece (what one rank sends to each peer) when
 * the head split is even; uneven splits: usp/a2a.h's per-peer pieces. */
long usp_a2a_piece_elems(const usp_config *c, usp_a2a a);

const char *usp_step_kind_name(usp_step_kind k);
/* PACK, UNPACK, MERGE, INIT, BWD_PREP and ACCUM: steps whose time is the bytes they
 * move through device memory (bytes_mem), not FLOPs or a link. */
int usp_step_memory_bound(usp_step_kind k);
/* The kind usp_step_kind_name gives `name` for; USP_STEP_KIND_COUNT when none. */
usp_step_kind usp_step_kind_of(const char *name);
const char *usp_buf_name(usp_buf b);

/* Writes one rank's steps readably, one per line. */
void usp_schedule_print(const usp_schedule *s, int rank, FILE *f);

/* (query, key) pairs a block lets through; FLOPs are 4*D (fwd) or 10*D (bwd) per pair and head. */
double usp_block_pairs(const usp_block *b);

/* Visible pairs of an attention step per batch element (from its FLOPs, so
 * per-row masks count), and whether some but not all pairs of its box are
 * masked (kernels run such blocks below the full-block rate). */
double usp_step_pairs(const usp_config *c, const usp_step *st);
int usp_step_partial(const usp_config *c, const usp_step *st);

/* Max over mean of the forward attention FLOPs of the ranks: the work
 * imbalance of the token layout (1 when perfectly even). */
double usp_schedule_imbalance(const usp_schedule *s);

#endif
