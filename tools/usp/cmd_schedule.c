/* usp schedule: print one rank's steps. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "usp/json.h"
#include "usp/schedule.h"

static void help(void) {
    printf("usage: usp schedule [--rank R] [--forward-only] [--json] [problem options]\n\n"
           "Prints the steps of rank R (default 0): stream, kind, what waits for what,\n"
           "the mask of every attention block, bytes sent and FLOPs, and the work\n"
           "imbalance of the token layout (max over mean attention pairs per rank).\n\n");
    usp_cli_config_help(stdout);
}

static void print_json(const usp_schedule *s, int rank) {
    const usp_rank_schedule *rs = &s->ranks[rank];
    printf("{\"rank\": %d, \"ring_rank\": %d, \"ulysses_rank\": %d, \"forward_steps\": %d, "
           "\"peak_bytes\": %.0f, \"imbalance\": %.6f, ", rank, rs->ring_rank, rs->ulysses_rank, rs->nfwd,
           usp_peak_bytes(rs, s->cfg.dtype), usp_schedule_imbalance(s));
    if (s->cfg.mask) {
        printf("\"mask\": ");
        usp_json_write_string(stdout, usp_mask_describe(s->cfg.mask));
        printf(", ");
    }
    printf("\"steps\": [");
    for (int i = 0; i < rs->nsteps; i++) {
        const usp_step *st = usp_rank_step(rs, i);
        printf("%s\n  {\"index\": %d, \"name\": \"%s\", \"kind\": \"%s\", \"stream\": \"%s\", "
               "\"after\": %d, \"bytes_sent\": %.0f, \"bytes_mem\": %.0f, \"flops\": %.0f",
               i ? "," : "", i, st->name, usp_step_kind_name(st->kind),
               st->stream == USP_STREAM_COMPUTE ? "compute" : "comm", st->dep, st->bytes_sent,
               st->bytes_mem, st->flops);
        if (st->kind == USP_STEP_ATTN_FWD || st->kind == USP_STEP_ATTN_BWD)
            printf(", \"q\": [%d, %d], \"kv\": [%d, %d], \"causal\": %d, \"diag\": %d, \"kv_block\": %d, "
                   "\"mask_layer\": %d, \"pairs\": %.0f",
                   st->blk.q_begin, st->blk.q_len, st->blk.kv_begin, st->blk.kv_len, st->blk.causal,
                   st->blk.diag, usp_step_src_block(&s->cfg, rank, st), st->mask_layer,
                   usp_step_pairs(&s->cfg, st) * s->cfg.batch);
        if (st->kind == USP_STEP_SENDRECV)
            printf(", \"send_to\": %d, \"recv_from\": %d", usp_step_send_peer(&s->cfg, rank, st),
                   usp_step_recv_peer(&s->cfg, rank, st));
        printf("}");
    }
    printf("\n]}\n");
}

int cmd_schedule(int argc, char **argv) {
    enum { OPT_RANK = USP_OPT_CMD_FIRST, OPT_FWD, OPT_JSON, OPT_HELP };
    static const struct option opts[] = {
        USP_CLI_CONFIG_LONGOPTS,
        {"rank", required_argument, 0, OPT_RANK},
        {"forward-only", no_argument, 0, OPT_FWD},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    usp_config cfg = usp_config_default();
    cfg.kv_heads = 0;
    long rank = 0;
    int backward = 1, json = 0, opt;
    optind = 1;
    while ((opt = usp_cli_getopt("schedule", "schedule", argc, argv, "", opts)) != -1) {
        if (opt == '?') return 2;
        int r = usp_cli_config_option("schedule", opt, optarg, &cfg);
        if (r < 0) return 2;
        if (r > 0) continue;
        switch (opt) {
        case OPT_RANK:
            if (usp_parse_int(optarg, 0, 1 << 20, &rank) != 0)
                return usp_cli_bad_input("schedule", "--rank '%s' is not a rank number", optarg);
            break;
        case OPT_FWD: backward = 0; break;
        case OPT_JSON: json = 1; break;
        case OPT_HELP: help(); return 0;
        default: return usp_cli_bad_input("schedule", "unknown option (usp schedule --help)");
        }
    }
    if (optind < argc) return usp_cli_bad_input("schedule", "unexpected argument '%s'", argv[optind]);
    int rc = usp_cli_config_finish("schedule", &cfg);
    if (rc) return rc;
    usp_schedule s;
    usp_status st = usp_schedule_build(&cfg, backward, &s);
    if (st != USP_OK) return usp_cli_report("schedule", st);
    if (rank >= s.world) {
        usp_schedule_free(&s);
        return usp_cli_bad_input("schedule", "--rank %ld but world is %d", rank, usp_world(&cfg));
    }
    if (json) {
        print_json(&s, (int)rank);
    } else {
        usp_schedule_print(&s, (int)rank, stdout);
        printf("# work imbalance: max/mean attention pairs per rank %.4f (%s)\n",
               usp_schedule_imbalance(&s), usp_ring_impl_name(cfg.ring_impl));
    }
    usp_schedule_free(&s);
    return 0;
}
