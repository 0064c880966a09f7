/* test_json_outputs.c: every --json output of the usp command is JSON, as an
 * independent parser (jansson) reads it: every command, and usp run in every
 * shape (ulysses 1, ring 1, allgather, forward only, timing only, ref). The
 * GPU shapes run where two GPUs are present and are skipped otherwise.
 * usp plan and usp costs: every entry has its documented shape ("mix" the
 * parallel configuration alone, time and memory beside it).
 * argv[1] is the usp binary, argv[2] the repository's traces/ folder. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test_util.h"

static const char *usp_bin, *traces_dir;

/* Runs `usp <args>` (stderr dropped), returns its exit status and stdout. */
static int run_usp(const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s 2>/dev/null", tmp_dir, usp_bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t n; (n = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += n;
        if (cap - len < 4096) buf = realloc(buf, cap *= 2);
        assert_non_null(buf);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* `usp <args>` exits `rc` and prints one JSON document; returns it parsed. */
static json_t *expect_json(const char *args, int rc) {
    char *out;
    int got = run_usp(args, &out);
    if (got != rc) fail_msg("usp %s: exit %d, expected %d", args, got, rc);
    json_error_t err;
    json_t *doc = json_loads(out, JSON_REJECT_DUPLICATES, &err);
    if (!doc) fail_msg("usp %s: not JSON (line %d, column %d: %s): %.300s", args, err.line, err.column, err.text,
                       out + (err.position > 100 ? err.position - 100 : 0));
    free(out);
    return doc;
}

static void expect_member(const json_t *doc, const char *key, const char *args) {
    if (!json_object_get(doc, key)) fail_msg("usp %s: no \"%s\" in its JSON", args, key);
}

#define SMALL "--seq 256 --heads 4 --head-dim 16 --trace t.json"

static void run_in_every_shape(void **state) {
    (void)state;
    static const char *shapes[] = {
        "run --json " SMALL,
        "run --json --ulysses 1 --ring 4 " SMALL,
        "run --json --ulysses 4 --ring 1 " SMALL,
        "run --json --ulysses 1 --ring 1 " SMALL,
        "run --json --ring-impl allgather " SMALL,
        "run --json --ring-impl stripe --ulysses 1 --ring 2 " SMALL,
        "run --json --no-causal --ring-impl basic " SMALL,
        "run --json --forward-only " SMALL,
        "run --json --no-numerics --dtype bf16 " SMALL,
        "run --json --backend ref " SMALL,
        "run --json --backend ref --ulysses 1 --ring 2 --ring-impl allgather " SMALL,
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        json_t *doc = expect_json(shapes[i], 0);
        expect_member(doc, "config", shapes[i]);
        expect_member(doc, "ranks", shapes[i]);
        expect_member(doc, "pass", shapes[i]);
        json_decref(doc);
    }
}

/* Two GPUs: the GPU backend's shapes; skipped where there are none. */
static void run_on_gpus(void **state) {
    (void)state;
    if (system("nvidia-smi -L 2>/dev/null | grep -c GPU | grep -qv '^[01]$'") != 0) {
        print_message("fewer than two GPUs here: usp run --backend gpu --json not exercised\n");
        skip();
    }
    static const char *shapes[] = {
        "run --backend gpu --gpus 2 --json --dtype bf16 --ulysses 1 --ring 2 --seq 1024 --head-dim 64",
        "run --backend gpu --gpus 2 --json --dtype bf16 --ulysses 2 --ring 1 --seq 1024 --head-dim 64",
        "run --backend gpu --gpus 2 --json --dtype bf16 --ulysses 1 --ring 2 --ring-impl allgather --seq 1024 --head-dim 64",
        "kernel-check --quick --json",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) json_decref(expect_json(shapes[i], 0));
}

static void every_other_command(void **state) {
    (void)state;
    char args[1024];
    json_decref(expect_json("schedule --json --rank 1 --seq 64 --heads 4", 0));
    json_decref(expect_json("verify --quick --json", 0));
    json_decref(expect_json("platform --list --json", 0));
    json_decref(expect_json("platform --preset star:nodes=2 --json", 0));
    json_decref(expect_json("sweep --world 4 --seq 4096 --heads 8 --json", 0));
    json_decref(expect_json("costs --json", 0));
    json_decref(expect_json("plan --model llama3-8b --seq 64K --gpus 8 --json", 0));
    /* two traces of one schedule, diffed and drawn */
    json_decref(expect_json("run --ulysses 1 --ring 2 --seq 256 --heads 4 --head-dim 16 --trace a.json --json", 0));
    json_decref(expect_json("run --ulysses 1 --ring 2 --seq 256 --heads 4 --head-dim 16 --platform h200x2 "
                            "--trace b.json --json", 0));
    json_decref(expect_json("trace diff a.json b.json --json", 0));
    json_decref(expect_json("trace svg a.json b.json -o ab.svg --json", 0));
    snprintf(args, sizeof args, "validate --traces %s --json", traces_dir);
    json_decref(expect_json(args, 0));
}

/* ------------------------------------------- usp plan and usp costs shape */

/* An object's keys are exactly `keys` (NULL-terminated), in any order. */
static void expect_keys(const json_t *obj, const char *const *keys, const char *what) {
    if (!json_is_object(obj)) fail_msg("%s: not an object", what);
    size_t n = 0;
    for (; keys[n]; n++)
        if (!json_object_get(obj, keys[n])) fail_msg("%s: no \"%s\"", what, keys[n]);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], key) != 0) i++;
        if (!keys[i]) fail_msg("%s: unexpected \"%s\"", what, key);
    }
    assert_int_equal(json_object_size(obj), n);
}

/* "mix" is the parallel configuration alone (sim/plan/README.md, "JSON"). */
static const char *const MIX_KEYS[] = {"dp", "tp", "ulysses", "ring", "zero", "recompute", "tp_sp", "tp_overlap", NULL};
static const char *const MEMORY_KEYS[] = {"params", "grads", "optimizer", "activations", "layer_saved", "working",
                                          "total", NULL};
#define POINT_KEYS                                                                                               \
    "rank", "mix", "step_s", "layer_fwd_s", "layer_bwd_s", "edges_s", "compute_s", "exposed_s", "tflops_per_gpu", \
        "mfu", "micro_batch", "accumulation_steps", "oom", "memory_bytes"

static void expect_mix(const json_t *entry, const char *what) {
    const json_t *mix = json_object_get(entry, "mix");
    expect_keys(mix, MIX_KEYS, what);
    for (const char *const *k = MIX_KEYS; *k; k++)
        if (!json_is_integer(json_object_get(mix, *k)) && !json_is_boolean(json_object_get(mix, *k)))
            fail_msg("%s: mix.%s is neither an integer nor a boolean", what, *k);
}

static void expect_point(const json_t *pt, const char *const *keys, const char *what) {
    expect_keys(pt, keys, what);
    expect_mix(pt, what);
    expect_keys(json_object_get(pt, "memory_bytes"), MEMORY_KEYS, what);
    assert_true(json_is_integer(json_object_get(pt, "rank")));
    assert_true(json_number_value(json_object_get(pt, "step_s")) > 0);
    assert_true(json_is_boolean(json_object_get(pt, "oom")));
}

static void plan_and_costs_shape(void **state) {
    (void)state;
    static const char *const point_keys[] = {POINT_KEYS, "caveat", NULL};   /* the row under a caveat */
    static const char *const explain_keys[] = {POINT_KEYS, "bytes_per_layer", "bytes_edges",
                                               "bytes_accumulating_micro_batch", "bytes_per_step",
                                               "simulated_bytes_per_step", NULL};
    static const char *const refused_keys[] = {"mix", "why", NULL};
    const char *args = "plan --model llama2-7b --seq 16K --gpus 8 --platform h200x8 --tp 2 --zero 1 --recompute no "
                       "--json --explain --all";
    json_t *doc = expect_json(args, 0);
    const json_t *mixes = json_object_get(doc, "mixes"), *refused = json_object_get(doc, "refused");
    assert_true(json_is_array(mixes) && json_array_size(mixes) > 1);
    assert_true(json_is_array(refused) && json_array_size(refused) > 0);
    assert_true(json_is_null(json_object_get(doc, "caveat")));   /* NVSwitch: none */
    size_t i;
    json_t *e;
    json_int_t last_rank = 0;
    json_array_foreach(mixes, i, e) {
        expect_point(e, point_keys, "plan --json: mixes[]");
        json_int_t rank = json_integer_value(json_object_get(e, "rank"));
        assert_true(rank > last_rank);
        last_rank = rank;
        /* the degrees multiply to the GPUs */
        const json_t *mix = json_object_get(e, "mix");
        json_int_t gpus = 1;
        for (int k = 0; k < 4; k++) gpus *= json_integer_value(json_object_get(mix, MIX_KEYS[k]));
        assert_int_equal(gpus, 8);
    }
    json_array_foreach(refused, i, e) {
        expect_keys(e, refused_keys, "plan --json: refused[]");
        expect_mix(e, "plan --json: refused[]");
        assert_true(json_is_string(json_object_get(e, "why")));
    }
    const json_t *explain = json_object_get(doc, "explain");
    expect_point(explain, explain_keys, "plan --json: explain");
    /* --explain explains the first mix */
    assert_true(json_equal(json_object_get(explain, "mix"), json_object_get(json_array_get(mixes, 0), "mix")));
    assert_int_equal(json_integer_value(json_object_get(explain, "rank")), 1);
    json_decref(doc);

    static const char *const row_keys[] = {"name", "mix", "split", "param_ops", "act_ops", "param_bytes",
                                           "act_bytes", "pg_bytes", "os_bytes", "act_mem_bytes", NULL};
    static const char *const refused_row_keys[] = {"name", "mix", "refused", NULL};
    doc = expect_json("costs --seq 64K --degree 16 --ulysses 4 --json", 0); /* TP refused: 8 K/V heads */
    const json_t *rows = json_object_get(doc, "rows");
    assert_true(json_is_array(rows) && json_array_size(rows) > 0);
    int refused_rows = 0;
    json_array_foreach(rows, i, e) {
        int is_refused = json_object_get(e, "refused") != NULL;
        refused_rows += is_refused;
        expect_keys(e, is_refused ? refused_row_keys : row_keys, "costs --json: rows[]");
        expect_mix(e, "costs --json: rows[]");
    }
    assert_true(refused_rows > 0 && (size_t)refused_rows < json_array_size(rows));
    json_decref(doc);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_json_outputs USP_BINARY TRACES_DIR\n");
        return 2;
    }
    usp_bin = argv[1];
    traces_dir = argv[2];
    if (tmp_dir_make("usp_json_outputs") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(run_in_every_shape),
        cmocka_unit_test(every_other_command),
        cmocka_unit_test(plan_and_costs_shape),
        cmocka_unit_test(run_on_gpus),
    };
    return cmocka_run_group_tests(tests, NULL, remove_tmp_dir);
}
