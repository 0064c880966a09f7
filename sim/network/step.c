/* step.c: a schedule's comm step as an NCCL call (the engine's entry point
 * into the network layer).
 *
 * ALL_TO_ALL -> alltoall, SENDRECV -> sendrecv, ALLGATHER -> allgather,
 * REDUCE_SCATTER -> reducescatter. A group step's bytes_sent covers its n-1
 * remote peers, so the nccl-tests size of the call is bytes_sent * n / (n-1);
 * a SENDRECV's is bytes_sent. The plan's bytes are returned by the engine's
 * peer index: peer i of a group step is usp_group_member(cfg, group, rank, i),
 * the one peer of a SENDRECV is usp_step_send_peer(). With an uneven head
 * split, an all-to-all's pieces differ by peer (usp/a2a.h) and so do the
 * plan's bytes. */
#include "step.h"

#include <stdlib.h>
#include "usp/a2a.h"
#include "usp/layout.h"

void sim_a2a_uneven_pieces(const usp_config *cfg, usp_a2a a2a, int me, int n, double *bytes_to) {
    double remote = 0;
    for (int i = 0; i < n; i++)
        if (i != me) remote += (double)usp_a2a_send_elems(cfg, a2a, me, i);
    if (remote <= 0) return;
    for (int i = 0; i < n; i++)
        if (i != me) bytes_to[i] *= (double)usp_a2a_send_elems(cfg, a2a, me, i) * (n - 1) / remote;
}

double sim_step_plan(const sim_net *net, const usp_config *cfg, const usp_step *st, int rank, int n,
                     sim_coll_plan *plan, double *bytes_to) {
    int stack_members[64];
    if (st->kind == USP_STEP_SENDRECV) {
        int members[2] = {rank, usp_step_send_peer(cfg, rank, st)};
        double b[2];
        sim_coll_plan_make(net, SIM_COLL_SENDRECV, members, 2, 0, st->bytes_sent, plan, b);
        bytes_to[0] = b[1];
        return plan->delay_s;
    }
    sim_coll op = st->kind == USP_STEP_ALL_TO_ALL ? SIM_COLL_ALLTOALL
                : st->kind == USP_STEP_ALLGATHER ? SIM_COLL_ALLGATHER : SIM_COLL_REDUCESCATTER;
    int *members = n <= 64 ? stack_members : malloc((size_t)n * sizeof *members);
    if (!members) return -1;
    int me = 0;
    for (int i = 0; i < n; i++) {
        members[i] = usp_group_member(cfg, st->group, rank, i);
        if (members[i] == rank) me = i;
    }
    double size = n > 1 ? st->bytes_sent * n / (n - 1) : st->bytes_sent;
    sim_coll_plan_make(net, op, members, n, me, size, plan, bytes_to);
    if (members != stack_members) free(members);
    if (st->kind == USP_STEP_ALL_TO_ALL && !usp_heads_even(cfg)) sim_a2a_uneven_pieces(cfg, st->a2a, me, n, bytes_to);
    return plan->delay_s;
}
