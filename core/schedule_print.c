/* schedule_print.c: one rank's steps, readably. */
#include "usp/schedule.h"

static void print_bytes(FILE *f, double b) {
    if (b >= 1 << 30) fprintf(f, "%8.2f GiB", b / (1 << 30));
    else if (b >= 1 << 20) fprintf(f, "%8.2f MiB", b / (1 << 20));
    else if (b >= 1 << 10) fprintf(f, "%8.2f KiB", b / (1 << 10));
    else fprintf(f, "%8.0f B  ", b);
}

static void print_step(FILE *f, const usp_config *c, int rank, const usp_step *st, int i) {
    fprintf(f, "%4d %-7s %-22s %-14s", i, st->stream == USP_STREAM_COMPUTE ? "compute" : "comm",
            st->name, usp_step_kind_name(st->kind));
    if (st->dep >= 0) fprintf(f, " after %-4d", st->dep); else fprintf(f, "           ");
    switch (st->kind) {
    case USP_STEP_ATTN_FWD: case USP_STEP_ATTN_BWD:
        fprintf(f, " q[%d:%d] x kv[%d:%d] of block %d", st->blk.q_begin,
                st->blk.q_begin + st->blk.q_len, st->blk.kv_begin,
                st->blk.kv_begin + st->blk.kv_len, usp_step_src_block(c, rank, st));
        if (st->mask_layer >= 0) fprintf(f, " rows(layer %d)", st->mask_layer);
        else if (st->blk.causal) fprintf(f, " causal(diag %+d)", st->blk.diag);
        fprintf(f, "  %.3g GFLOP", st->flops / 1e9);
        break;
    case USP_STEP_SENDRECV:
        fprintf(f, " %s,%s -> rank %d, %s,%s <- rank %d  ", usp_buf_name(st->src[0]),
                usp_buf_name(st->src[1]), usp_step_send_peer(c, rank, st), usp_buf_name(st->dst[0]),
                usp_buf_name(st->dst[1]), usp_step_recv_peer(c, rank, st));
        print_bytes(f, st->bytes_sent);
        break;
    case USP_STEP_ALL_TO_ALL: case USP_STEP_ALLGATHER: case USP_STEP_REDUCE_SCATTER:
        fprintf(f, " %s group, ", st->group == USP_GROUP_ULYSSES ? "ulysses" : "ring");
        print_bytes(f, st->bytes_sent);
        fprintf(f, " sent");
        break;
    default:
        fprintf(f, " %s", usp_buf_name(st->src[0]));
        if (st->src[1] != USP_BUF_NONE) fprintf(f, ",%s", usp_buf_name(st->src[1]));
        fprintf(f, " -> %s", usp_buf_name(st->dst[0]));
        if (st->dst[1] != USP_BUF_NONE) fprintf(f, ",%s", usp_buf_name(st->dst[1]));
        if (st->kind == USP_STEP_MERGE)
            fprintf(f, " rows [%d:%d]", st->blk.q_begin, st->blk.q_begin + st->blk.q_len);
        break;
    }
    fputc('\n', f);
}

void usp_schedule_print(const usp_schedule *s, int rank, FILE *f) {
    const usp_rank_schedule *rs = &s->ranks[rank];
    char desc[256];
    usp_config_describe(&s->cfg, desc, sizeof desc);
    fprintf(f, "# %s\n# rank %d: ring rank %d, ulysses rank %d; %d steps (%d forward)\n", desc,
            rank, rs->ring_rank, rs->ulysses_rank, rs->nsteps, rs->nfwd);
    for (int i = 0; i < rs->nsteps; i++) print_step(f, &s->cfg, rank, usp_rank_step(rs, i), i);
    fprintf(f, "# buffers:");
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        const usp_buf_info *bi = &rs->bufs[b];
        if (bi->elems == 0) continue;
        if (bi->alias != USP_BUF_NONE) fprintf(f, " %s=%s", bi->name, usp_buf_name(bi->alias));
        else fprintf(f, " %s[%ld]", bi->name, bi->elems);
    }
    fprintf(f, "\n# peak memory: %.2f MiB\n", usp_peak_bytes(rs, s->cfg.dtype) / (1 << 20));
}
