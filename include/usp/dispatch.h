/* usp/dispatch.h: a mask over the ring: which tokens each ring rank holds,
 * and what each attention block of the schedule sees.
 *
 * Token layouts (usp/layout.h) give every ring rank an ascending list of
 * L/R tokens. For a configuration with a mask (cfg->mask), the block of the
 * queries of ring rank r against the K/V of ring rank j, in layer l of the
 * mask, is one key interval per query row in the K/V block's local rows
 * (a global interval of keys meets an ascending token list in one run).
 *
 * Balanced dispatch (ring_impl balanced): the sequence is cut into C = R*m
 * equal chunks (m the largest divisor of L/R not above
 * USP_DISPATCH_MAX_CHUNKS_PER_RANK); a chunk's cost is the visible pairs of
 * its query rows (every batch element, every layer), which is what a rank
 * computes for it whichever ranks hold the keys. Chunks go, heaviest first,
 * to the least loaded rank that still has room for one (every rank takes m:
 * equal token counts), then pairs of chunks are swapped between the most
 * and the least loaded rank while that narrows the gap. The snake (chunks
 * dealt to ranks 0..R-1, R-1..0, ...) replaces that when it shortens the
 * ring's critical path (the sum over ring steps of the largest block's
 * pairs): it spreads every document over every rank, so each ring step is
 * even too. Each rank's chunks are then put in ascending order. Zigzag is
 * the snake of one causal document cut into 2R chunks. */
#ifndef USP_DISPATCH_H
#define USP_DISPATCH_H

#include <stdint.h>
#include "usp/schedule.h"

enum { USP_DISPATCH_MAX_CHUNKS_PER_RANK = 256 };

/* The tokens of every ring rank under cfg's token layout, [ring][seq/ring]
 * ascending per rank (cached in cfg->mask; NULL with a reason when out of
 * memory). Needs cfg->mask. */
const int32_t *usp_dispatch_tokens(const usp_config *c);

typedef enum {
    USP_MBLK_EMPTY,   /* no visible pair: no step */
    USP_MBLK_FULL,    /* every pair of blk */
    USP_MBLK_CAUSAL,  /* blk.causal with blk.diag, as without a mask */
    USP_MBLK_ROWS     /* anything else: per-row intervals (usp_mask_block_rows) */
} usp_mblk_kind;

/* The tiles usp's attention kernels work in (gpu/kernels: query rows x keys), for the
 * simulator's time of a block under per-row masks: the forward takes a tile of query rows
 * and loops over the key tiles that any of its rows sees, the backward a tile of keys and
 * loops over the query tiles that see any of them. */
enum { USP_TILE_FWD_ROWS = 128, USP_TILE_FWD_KEYS = 128, USP_TILE_BWD_ROWS = 64, USP_TILE_BWD_KEYS = 128 };

/* A kernel's work on one block: the pairs of the tiles it visits (whole tiles, seen or not)
 * and its units (forward: query tiles that see a key; backward: key tiles that a row sees),
 * each of which pays its loop's setup. */
typedef struct {
    double tile_pairs, units;
} usp_tile_work;

typedef struct {
    usp_block blk;    /* bounding rows and keys; causal/diag for USP_MBLK_CAUSAL */
    usp_mblk_kind kind;
    double pairs;     /* visible pairs, summed over the mask's lists */
    usp_tile_work fwd, bwd; /* USP_MBLK_ROWS: the kernels' tiles from blk's first row and key, summed over the lists */
} usp_mask_block;

/* Layer `layer` of the block (queries of ring rank r, keys of ring rank j).
 * pairs counts each list once: multiply by the batch when the mask has one
 * list (usp_mask_block_pairs does). */
usp_status usp_mask_block_of(const usp_config *c, int r, int j, int layer, usp_mask_block *out);
double usp_mask_block_pairs(const usp_config *c, const usp_mask_block *mb);
/* mb's tile work of the forward (bwd 0) or backward (1), over the whole batch as
 * usp_mask_block_pairs counts its pairs. */
usp_tile_work usp_mask_block_tiles(const usp_config *c, const usp_mask_block *mb, int bwd);

/* The tile work of per-row intervals lo, hi [n] (keys relative to k0, rows from q0; rows
 * outside [q0, q1) ignored), added to *fwd and *bwd; scratch holds one int per key tile
 * (ceil(n / USP_TILE_BWD_KEYS) + 1). */
void usp_tile_work_add(const int32_t *lo, const int32_t *hi, long q0, long q1, long k0, int *scratch,
                       long nkt, usp_tile_work *fwd, usp_tile_work *bwd);
/* w in FLOPs at per_pair FLOPs a pair: its tiles' (usp_step.tile_flops) and one token of loop
 * in each of its units, the forward's looping over keys for a tile of USP_TILE_FWD_ROWS rows,
 * the backward's over rows for a tile of USP_TILE_BWD_KEYS keys (usp_step.loop_flops). */
void usp_tile_work_flops(usp_tile_work w, int bwd, double per_pair, double *tile_flops, double *loop_flops);
/* An attention step's FLOPs as a kernel's full-block rate sees them (the one time model of
 * the simulator, sim/device/profile.c, and of the calibration's fits, sim/validate/
 * validate_fit.c): under per-row masks (tile_flops > 0) its tiles and `shrt` tokens of
 * loop a unit (loop_flops is one token a unit), over the per-row-mask efficiency rowmask
 * (<= 0: 1); else its FLOPs raised by the short-loop factor 1 + shrt / loop, the loop the
 * keys (forward) or rows (backward) a tile walks. The masked-block efficiency of partial
 * blocks, the rate and the fixed time are the caller's. */
double usp_rated_flops(double flops, double loop, double tile_flops, double loop_flops, double shrt, double rowmask);

/* The per-row form of that block for batch element b: lo, hi [L/R], query
 * row i of ring rank r sees keys [lo[i], hi[i]) of ring rank j's block. */
usp_status usp_mask_block_rows(const usp_config *c, int r, int j, int layer, int b, int32_t *lo,
                               int32_t *hi);

/* The kernels' form (usp/rowmask.h) of an attention step with a mask layer
 * (st->mask_layer >= 0) of global rank `rank`: lo, hi [batch][blk.q_len],
 * row i of the step's rows sees keys [lo, hi) counted from blk.kv_begin. */
usp_status usp_step_row_mask(const usp_config *c, int rank, const usp_step *st, int32_t *lo, int32_t *hi);

/* Visible pairs of each ring rank's queries (per_rank [ring], may be NULL),
 * every batch element; returns max over mean (1 when nothing is visible).
 * Without a mask, from the causal or full mask of one document. */
usp_status usp_dispatch_balance(const usp_config *c, double *per_rank, double *max_over_mean);

#endif
