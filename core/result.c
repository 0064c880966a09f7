/* result.c: the usp_result every executor fills. */
#include "usp/executor.h"

#include <stdlib.h>
#include <string.h>

usp_status usp_result_init(usp_result *r, const usp_schedule *s, int with_outputs) {
    const usp_config *c = &s->cfg;
    memset(r, 0, sizeof *r);
    r->world = s->world;
    r->ranks = usp_calloc((size_t)s->world, sizeof *r->ranks);
    if (!r->ranks) return USP_EINTERNAL;
    if (!with_outputs) return USP_OK;
    size_t q = (size_t)c->batch * c->seq * c->heads * c->head_dim;
    size_t kv = (size_t)c->batch * c->seq * c->kv_heads * c->head_dim;
    size_t lse = (size_t)c->batch * c->heads * c->seq;
    r->o = usp_calloc(q, sizeof(double));
    r->lse = usp_calloc(lse, sizeof(double));
    if (s->backward) {
        r->dq = usp_calloc(q, sizeof(double));
        r->dk = usp_calloc(kv, sizeof(double));
        r->dv = usp_calloc(kv, sizeof(double));
    }
    if (!r->o || !r->lse || (s->backward && (!r->dq || !r->dk || !r->dv))) {
        usp_result_free(r);
        return USP_EINTERNAL;
    }
    return USP_OK;
}

void usp_result_free(usp_result *r) {
    free(r->o); free(r->lse); free(r->dq); free(r->dk); free(r->dv);
    free(r->ranks);
    memset(r, 0, sizeof *r);
}

void usp_result_count_schedule(usp_result *r, const usp_schedule *s) {
    for (int g = 0; g < s->world; g++) {
        const usp_rank_schedule *rs = &s->ranks[g];
        usp_rank_stats *st = &r->ranks[g];
        memset(st->bytes_sent, 0, sizeof st->bytes_sent);
        st->flops = 0;
        for (int i = 0; i < rs->nsteps; i++) {
            st->bytes_sent[usp_rank_step(rs, i)->kind] += usp_rank_step(rs, i)->bytes_sent;
            st->flops += usp_rank_step(rs, i)->flops;
        }
        st->peak_bytes = usp_peak_bytes(rs, s->cfg.dtype);
    }
}
