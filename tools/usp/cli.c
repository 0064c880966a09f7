/* cli.c: option parsing and reporting shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int usp_cli_bad_input(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "usp: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int usp_cli_report(const char *cmd, int status) {
    fprintf(stderr, "usp: %s: %s\n", cmd, usp_error());
    return status == USP_EINVAL ? 2 : 1;
}

int usp_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int usp_parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int usp_cli_int_option(const char *cmd, const char *name, const char *arg, long lo, long hi, int *out) {
    long v;
    if (usp_parse_int(arg, lo, hi, &v) != 0)
        return usp_cli_bad_input(cmd, "--%s '%s' is not an integer in %ld..%ld", name, arg, lo, hi);
    *out = (int)v;
    return 0;
}

int usp_cli_seconds_option(const char *cmd, const char *name, const char *arg, double *out) {
    if (usp_parse_double(arg, out) || !(*out > 0))
        return usp_cli_bad_input(cmd, "--%s '%s' is not a positive number of seconds", name, arg);
    return 0;
}

int usp_cli_getopt(const char *cmd, const char *help_cmd, int argc, char **argv, const char *shorts,
                   const struct option *opts) {
    char optstring[32];
    snprintf(optstring, sizeof optstring, ":%s", shorts); /* ':' first: a missing value is ':' */
    opterr = 0;
    int prev = optind;
    int opt = getopt_long(argc, argv, optstring, opts, NULL);
    if (opt != '?' && opt != ':') return opt;
    /* the word refused: the one getopt stepped over (a short option inside a cluster stays current) */
    const char *word = optind > prev ? argv[optind - 1] : argv[prev];
    char shown[8];
    if (optopt && (word[0] != '-' || word[1] != '-')) { snprintf(shown, sizeof shown, "-%c", optopt); word = shown; }
    if (opt == ':') {
        usp_cli_bad_input(cmd, "option '%s' needs a value (usp %s --help)", word, help_cmd);
        return '?';
    }
    const char *eq = strchr(word, '=');
    for (int i = 0; eq && word[0] == '-' && word[1] == '-' && opts[i].name; i++)
        if (opts[i].has_arg == no_argument && strlen(opts[i].name) == (size_t)(eq - word - 2) &&
            strncmp(opts[i].name, word + 2, (size_t)(eq - word - 2)) == 0) {
            usp_cli_bad_input(cmd, "option '--%s' takes no value (usp %s --help)", opts[i].name, help_cmd);
            return '?';
        }
    usp_cli_bad_input(cmd, "unknown option '%s' (usp %s --help)", word, help_cmd);
    return '?';
}

int usp_cli_parse(const char *cmd, int argc, char **argv, const struct option *opts, int help_opt,
                  void (*help)(void), usp_cli_apply_fn apply, void *ctx) {
    int opt;
    optind = 1;
    while ((opt = usp_cli_getopt(cmd, cmd, argc, argv, "", opts)) != -1) {
        if (opt == '?') return 2;
        if (opt == help_opt) { help(); return -1; }
        int rc = apply(opt, optarg, ctx);
        if (rc) return rc;
    }
    if (optind < argc) return usp_cli_bad_input(cmd, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* The mask options seen since the last usp_cli_config_finish, and whether
 * --seq was given (documents set it otherwise). */
static usp_mask_spec pending_mask;
static int seq_given;

/* A config option's answer: 1 applied, -1 refused (see usp_cli_config_option). */
static int int_option(const char *cmd, const char *name, const char *arg, long lo, long hi, int *dst) {
    return usp_cli_int_option(cmd, name, arg, lo, hi, dst) ? -1 : 1;
}

/* kv_heads left at 0 means "same as heads" until usp_cli_config_finish. */
int usp_cli_config_option(const char *cmd, int opt, const char *arg, usp_config *cfg) {
    const long big = 1L << 30;
    switch (opt) {
    case USP_OPT_BATCH: return int_option(cmd, "batch", arg, 1, big, &cfg->batch);
    case USP_OPT_SEQ: seq_given = 1; return int_option(cmd, "seq", arg, 1, big, &cfg->seq);
    case USP_OPT_SEQLENS: pending_mask.seqlens = arg; return 1;
    case USP_OPT_SEQLENS_FILE: pending_mask.seqlens_file = arg; return 1;
    case USP_OPT_WINDOW: pending_mask.window = arg; return 1;
    case USP_OPT_MASK: pending_mask.mask_file = arg; return 1;
    case USP_OPT_HEADS: return int_option(cmd, "heads", arg, 1, 1 << 16, &cfg->heads);
    case USP_OPT_KV_HEADS: return int_option(cmd, "kv-heads", arg, 1, 1 << 16, &cfg->kv_heads);
    case USP_OPT_HEAD_DIM: return int_option(cmd, "head-dim", arg, 1, 256, &cfg->head_dim);
    case USP_OPT_ULYSSES: return int_option(cmd, "ulysses", arg, 1, 65536, &cfg->ulysses);
    case USP_OPT_RING: return int_option(cmd, "ring", arg, 1, 65536, &cfg->ring);
    case USP_OPT_CAUSAL: cfg->causal = 1; return 1;
    case USP_OPT_NO_CAUSAL: cfg->causal = 0; return 1;
    case USP_OPT_SCALE:
        if (usp_parse_double(arg, &cfg->scale) != 0 || cfg->scale <= 0)
            return usp_cli_bad_input(cmd, "--scale '%s' is not a positive number", arg), -1;
        return 1;
    case USP_OPT_SEED: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-')
            return usp_cli_bad_input(cmd, "--seed '%s' is not a non-negative integer", arg), -1;
        cfg->seed = v;
        return 1;
    }
    case USP_OPT_DTYPE:
        if (usp_parse_dtype(arg, &cfg->dtype) != USP_OK) return usp_cli_report(cmd, USP_EINVAL), -1;
        return 1;
    case USP_OPT_RING_IMPL:
        if (usp_parse_ring_impl(arg, &cfg->ring_impl) != USP_OK) return usp_cli_report(cmd, USP_EINVAL), -1;
        return 1;
    case USP_OPT_LAYOUT:
        if (usp_parse_layout(arg, &cfg->layout) != USP_OK) return usp_cli_report(cmd, USP_EINVAL), -1;
        return 1;
    case USP_OPT_WIRE:
        if (usp_parse_wire(arg, &cfg->wire) != USP_OK) return usp_cli_report(cmd, USP_EINVAL), -1;
        return 1;
    case USP_OPT_DKV_SERIAL: cfg->dkv_serial = 1; return 1;
    case USP_OPT_CONTIGUOUS: cfg->contiguous = 1; return 1;
    default:
        return 0;
    }
}

/* The masks built here, held from a global until the process ends (a
 * configuration on a command's stack points to them; LeakSanitizer counts
 * memory only a returned stack frame pointed to as leaked). */
static void keep_mask(usp_mask *m) {
    static usp_mask **kept;
    static size_t nkept;
    usp_mask **grown = realloc(kept, (nkept + 1) * sizeof *kept);
    if (!grown) return;
    kept = grown;
    kept[nkept++] = m;
}

int usp_cli_config_finish(const char *cmd, usp_config *cfg) {
    if (cfg->kv_heads <= 0) cfg->kv_heads = cfg->heads;
    usp_mask_spec spec = pending_mask;
    int given = seq_given;
    memset(&pending_mask, 0, sizeof pending_mask);
    seq_given = 0;
    /* balanced alone: the work of one causal or full document */
    if (!usp_mask_spec_given(&spec) && cfg->ring_impl != USP_RING_BALANCED) return 0;
    spec.causal = cfg->causal;
    usp_mask *m = NULL;
    long seq = (spec.seqlens || spec.seqlens_file) && !given ? 0 : cfg->seq;
    if (usp_mask_build(&spec, seq, cfg->batch, &m) != USP_OK) return usp_cli_report(cmd, USP_EINVAL);
    cfg->seq = (int)usp_mask_seq(m);
    cfg->mask = m; /* lives until the process ends, as the configuration that points to it */
    keep_mask(m);
    return 0;
}

void usp_cli_config_help(FILE *f) {
    usp_config d = usp_config_default();
    fprintf(f,
            "Problem and sharding:\n"
            "  --batch B           batch size (default %d)\n"
            "  --seq L             sequence length, tokens (default %d)\n"
            "  --heads H           query heads (default %d)\n"
            "  --kv-heads HKV      key/value heads, H %% HKV == 0 (default: H)\n"
            "  --head-dim D        head dimension, 1..256 (default %d)\n"
            "  --causal | --no-causal   mask (default causal)\n"
            "  --scale S           softmax scale (default 1/sqrt(D))\n"
            "  --dtype T           fp64, fp32, fp16, bf16 (default %s)\n"
            "  --ulysses U         ulysses degree: all-to-all over heads (default %d)\n"
            "  --ring R            ring degree: K/V passed around a ring (default %d)\n"
            "  --ring-impl I       basic, zigzag, stripe, allgather, balanced (default %s)\n"
            "  --layout P          ulysses-inner (g = r*U + u) or ring-inner (g = u*R + r)\n"
            "  --seed N            seed of the generated inputs (default %llu)\n"
            "  --wire W            what the all-to-alls of O, dQ, dK, dV carry in bf16/fp16\n"
            "                      runs: dtype (the run's, default) or fp32; the CPU\n"
            "                      executors round the payload to the dtype as the GPU does\n"
            "  --dkv-serial        backward ring without separate dK/dV accumulators: each\n"
            "                      attention waits for the previous dK/dV hop (the schedule\n"
            "                      of older recorded traces)\n"
            "Masks (--causal/--no-causal apply inside each document):\n"
            "  --seqlens L1,L2,..  packed documents, the same for every batch element\n"
            "                      (--seq defaults to their total)\n"
            "  --seqlens-file F    .npy of cumulative lengths (cu_seqlens): (n+1,), or\n"
            "                      (B, n+1) for one packing per batch element\n"
            "  --window LEFT,RIGHT query i sees keys i-LEFT..i+RIGHT (-1 unbounded)\n"
            "  --mask FILE.json    slices [{\"q\": [q0, q1], \"k\": [k0, k1], \"type\":\n"
            "                      \"full\" | \"causal\" | \"bicausal\"}, ...]\n"
            "  --contiguous        with --ring-impl allgather and a mask: each ring rank keeps\n"
            "                      one contiguous chunk of L/R tokens (llama3's context\n"
            "                      parallel), not the balanced dispatch of the work\n",
            d.batch, d.seq, d.heads, d.head_dim, usp_dtype_name(d.dtype), d.ulysses, d.ring,
            usp_ring_impl_name(d.ring_impl), (unsigned long long)d.seed);
}
