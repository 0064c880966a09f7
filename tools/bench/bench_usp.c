/* bench_usp.c: times the GPU executor on this machine's GPUs.
 *
 * With --gpus 1, the whole problem on one GPU (the ulysses 1 x ring 1
 * schedule: the kernel on all tokens and heads, plus an O/LSE init and one
 * merge); with --gpus 2, every 2-rank split: ring 2 with each ring_impl, and
 * ulysses 2. Forward and forward+backward, causal by default, inputs made on
 * the GPU, times from CUDA events (median of --iters after --warmup).
 * tools/bench-usp runs it beside PyTorch's context parallel and makes the
 * table; this program prints one line per case and writes JSON.
 *
 * usage: bench_usp [--gpus N] [--seqs 32768,65536,131072] [--heads 32]
 *                  [--kv-heads H] [--head-dim 128] [--batch 1] [--dtype bf16]
 *                  [--no-causal] [--warmup 1] [--iters 3] [--timeout S] [--json FILE]
 * Without a launcher's variables it starts its --gpus ranks itself. */
#define _POSIX_C_SOURCE 200809L /* strdup, strtok_r */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "usp/gpu_exec.h"

typedef struct { const char *name; int ulysses, ring; usp_ring_impl impl; } mesh_case;

static const mesh_case one_gpu[] = {{"1gpu", 1, 1, USP_RING_BASIC}};
static const mesh_case two_gpus[] = {
    {"ring2-basic", 1, 2, USP_RING_BASIC}, {"ring2-zigzag", 1, 2, USP_RING_ZIGZAG},
    {"ring2-stripe", 1, 2, USP_RING_STRIPE}, {"ring2-allgather", 1, 2, USP_RING_ALLGATHER},
    {"ulysses2", 2, 1, USP_RING_BASIC}};

typedef struct {
    int gpus, seqs[16], nseqs, warmup, iters;
    usp_config base;
    double timeout_s;
    const char *json_path;
} bench_options;

typedef struct {
    const char *name;
    int seq;
    double fwd_ms, fwdbwd_ms, fwd_tflops, fwdbwd_tflops, exposed_comm_ms;
} measurement;

static int parse_seqs(const char *s, bench_options *o) {
    o->nseqs = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && o->nseqs < 16; t = strtok_r(NULL, ",", &save))
        o->seqs[o->nseqs++] = atoi(t);
    free(copy);
    return o->nseqs > 0 ? 0 : -1;
}

static int parse(int argc, char **argv, bench_options *o) {
    static const struct option opts[] = {
        {"gpus", required_argument, 0, 'g'}, {"seqs", required_argument, 0, 's'},
        {"heads", required_argument, 0, 'h'}, {"kv-heads", required_argument, 0, 'k'},
        {"head-dim", required_argument, 0, 'd'}, {"batch", required_argument, 0, 'b'},
        {"dtype", required_argument, 0, 't'}, {"no-causal", no_argument, 0, 'n'},
        {"warmup", required_argument, 0, 'w'}, {"iters", required_argument, 0, 'i'},
        {"timeout", required_argument, 0, 'T'}, {"json", required_argument, 0, 'j'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'g': o->gpus = atoi(optarg); break;
        case 's': if (parse_seqs(optarg, o)) return -1; break;
        case 'h': o->base.heads = atoi(optarg); break;
        case 'k': o->base.kv_heads = atoi(optarg); break;
        case 'd': o->base.head_dim = atoi(optarg); break;
        case 'b': o->base.batch = atoi(optarg); break;
        case 't': if (usp_parse_dtype(optarg, &o->base.dtype) != USP_OK) return -1; break;
        case 'n': o->base.causal = 0; break;
        case 'w': o->warmup = atoi(optarg); break;
        case 'i': o->iters = atoi(optarg); break;
        case 'T': o->timeout_s = atof(optarg); break;
        case 'j': o->json_path = optarg; break;
        default: return -1;
        }
    }
    if (o->base.kv_heads <= 0) o->base.kv_heads = o->base.heads;
    return (o->gpus == 1 || o->gpus == 2) && o->iters > 0 ? 0 : -1;
}

/* FLOPs as flash-attention counts them: 4*B*L^2*H*D forward (halved when
 * causal), backward 2.5 times that. */
static double forward_flops(const usp_config *c) {
    double f = 4.0 * c->batch * (double)c->seq * c->seq * c->heads * c->head_dim;
    return c->causal ? f / 2 : f;
}

static usp_status run_case(usp_gpu_ctx *ctx, const bench_options *o, const mesh_case *mc, int seq,
                           measurement *m) {
    usp_config c = o->base;
    c.seq = seq;
    c.ulysses = mc->ulysses;
    c.ring = mc->ring;
    c.ring_impl = mc->impl;
    usp_schedule s;
    usp_result res;
    USP_TRY(usp_schedule_build(&c, 1, &s));
    usp_status st = usp_result_init(&res, &s, 0);
    usp_gpu_options go = {.ctx = ctx, .warmup = o->warmup, .iters = o->iters};
    if (st == USP_OK) st = usp_gpu_execute(&s, NULL, &go, &res, NULL);
    if (st == USP_OK) {
        double f = forward_flops(&c);
        m->name = mc->name;
        m->seq = seq;
        m->fwd_ms = res.time_fwd_s * 1e3;
        m->fwdbwd_ms = (res.time_fwd_s + res.time_bwd_s) * 1e3;
        m->fwd_tflops = f / res.time_fwd_s / 1e12;
        m->fwdbwd_tflops = 3.5 * f / (res.time_fwd_s + res.time_bwd_s) / 1e12;
        for (int g = 0; g < s.world; g++)
            if (res.ranks[g].exposed_comm_s * 1e3 > m->exposed_comm_ms) m->exposed_comm_ms = res.ranks[g].exposed_comm_s * 1e3;
    }
    usp_result_free(&res);
    usp_schedule_free(&s);
    return st;
}

static void write_json(const bench_options *o, const measurement *m, int n) {
    FILE *f = fopen(o->json_path, "w");
    if (!f) { fprintf(stderr, "bench_usp: cannot write %s\n", o->json_path); return; }
    const usp_config *c = &o->base;
    fprintf(f, "{\"gpus\": %d, \"batch\": %d, \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, "
            "\"dtype\": \"%s\", \"causal\": %s, \"warmup\": %d, \"iters\": %d, \"cases\": [",
            o->gpus, c->batch, c->heads, c->kv_heads, c->head_dim, usp_dtype_name(c->dtype),
            c->causal ? "true" : "false", o->warmup, o->iters);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\n  {\"case\": \"%s\", \"seq\": %d, \"fwd_ms\": %.4f, \"fwdbwd_ms\": %.4f, "
                "\"fwd_tflops\": %.2f, \"fwdbwd_tflops\": %.2f, \"exposed_comm_ms\": %.4f}",
                i ? "," : "", m[i].name, m[i].seq, m[i].fwd_ms, m[i].fwdbwd_ms, m[i].fwd_tflops,
                m[i].fwdbwd_tflops, m[i].exposed_comm_ms);
    fprintf(f, "\n]}\n");
    fclose(f);
}

static int run_rank(const usp_gpu_env *env, const bench_options *o) {
    usp_gpu_ctx *ctx;
    if (usp_gpu_open(env, o->timeout_s, &ctx) != USP_OK) {
        fprintf(stderr, "bench_usp: %s\n", usp_error());
        return 1;
    }
    const mesh_case *cases = o->gpus == 1 ? one_gpu : two_gpus;
    int ncases = o->gpus == 1 ? 1 : (int)(sizeof two_gpus / sizeof two_gpus[0]), n = 0;
    measurement *m = calloc((size_t)o->nseqs * ncases, sizeof *m);
    int root = usp_gpu_rank(ctx) == 0;
    usp_status st = m ? USP_OK : USP_EINTERNAL;
    for (int i = 0; i < o->nseqs && st == USP_OK; i++)
        for (int k = 0; k < ncases && st == USP_OK; k++) {
            st = run_case(ctx, o, &cases[k], o->seqs[i], &m[n]);
            if (st == USP_OK && root) {
                printf("%-16s L=%-7d fwd %9.3f ms (%5.1f TFLOP/s)  fwd+bwd %9.3f ms (%5.1f TFLOP/s)  exposed comm %.3f ms\n",
                       m[n].name, m[n].seq, m[n].fwd_ms, m[n].fwd_tflops, m[n].fwdbwd_ms, m[n].fwdbwd_tflops,
                       m[n].exposed_comm_ms);
                fflush(stdout);
            }
            n++;
        }
    if (st != USP_OK) {
        fprintf(stderr, "bench_usp: %s\n", usp_error());
        usp_gpu_abort(ctx);
        free(m);
        return 1;
    }
    if (root && o->json_path) write_json(o, m, n);
    usp_gpu_close(ctx);
    free(m);
    return 0;
}

int main(int argc, char **argv) {
    bench_options o = {.gpus = 2, .warmup = 1, .iters = 3, .timeout_s = 300};
    o.base = usp_config_default();
    o.base.heads = 32;
    o.base.kv_heads = 0;
    o.base.head_dim = 128;
    o.base.dtype = USP_BF16;
    o.base.causal = 1;
    parse_seqs("32768,65536,131072", &o);
    if (parse(argc, argv, &o)) {
        fprintf(stderr, "usage: bench_usp [--gpus 1|2] [--seqs L1,L2,..] [--heads H] [--kv-heads H] "
                        "[--head-dim D] [--batch B] [--dtype bf16|fp16] [--no-causal] [--warmup N] "
                        "[--iters N] [--timeout S] [--json FILE]\n");
        return 2;
    }
    usp_gpu_env env;
    int found;
    if (usp_gpu_env_read(&env, &found) != USP_OK) {
        fprintf(stderr, "bench_usp: %s\n", usp_error());
        return 2;
    }
    if (!found) return usp_gpu_launch_local(o.gpus, argv, o.timeout_s);
    if (env.world != o.gpus) {
        fprintf(stderr, "bench_usp: --gpus %d but the launcher started %d ranks\n", o.gpus, env.world);
        return 2;
    }
    return run_rank(&env, &o);
}
