/* usp/validate.h: the simulator checked against measured GPU runs.
 *
 * A recorded case is a sidecar, <name>.case.json, and usually the GPU trace
 * it names, <name>.trace.json (what the GPU executor writes):
 *
 *   {"trace": "<name>.trace.json", "role": "held-out" | "calibration",
 *    "backward": true, "config": {"batch": 1, "seq": 32768, ...},
 *    "profile": "h200-calibrated", "platform": "../sim/platforms/h200x2-calibrated.xml",
 *    "bound_pct": 10, "measured_ms": {"fwd": 12.8, "bwd": 55.3, "iters": 3},
 *    "device": "2x NVIDIA H200"}
 *
 * "config" may carry a mask (usp/mask.h), "mask": {one of "seqlens": [l1,
 * l2, ...] (packed documents, every batch element), "slices": [{"q": [q0,
 * q1], "k": [k0, k1], "type": "causal"}, ...] (one list for every element),
 * "seqlens_file": "F.npy" (cu_seqlens), "mask_file": "F.json" (slices); and
 * optionally "window": [left, right]}. Inline lists hold at most
 * USP_VCASE_MAX_DOCS documents and USP_VCASE_MAX_SLICES slices (larger ones
 * go in a file). The case keeps what the sidecar says; usp_vcase_mask
 * builds the mask, which every schedule of the case is built with.
 *
 * Relative paths in a sidecar start at the sidecar's directory; a profile
 * that is not a file is a built-in name. Calibration cases fit the device
 * profile; held-out cases only test it. A case whose "trace" is null holds
 * only the measured forward and backward times (a benchmark's medians): it
 * is compared on FWD, BWD and TOTAL alone.
 *
 * Phases are measured the same way on a measured and on a predicted trace,
 * from the common start of the run (time 0):
 *   FWD_A2A   forward all-to-all: PACK, ALL_TO_ALL and UNPACK steps
 *   FWD_RING  the rest of the forward: INIT, SENDRECV, ALLGATHER, ATTN_FWD, MERGE
 *   BWD_A2A   backward PACK, ALL_TO_ALL, UNPACK
 *   BWD_RING  the rest of the backward
 * each as the time covered by the union of a rank's step intervals (both
 * streams), the largest over ranks; and
 *   FWD       the end of the last forward step on any rank
 *   BWD       TOTAL - FWD (0 without a backward)
 *   TOTAL     the end of the last step on any rank.
 * The error of a phase is (predicted - measured) / measured in percent. */
#ifndef USP_VALIDATE_H
#define USP_VALIDATE_H

#include <stdio.h>
#include "usp/profile.h"
#include "usp/schedule.h"
#include "usp/trace.h"

/* ---------------------------------------------------------------- phases */

typedef enum {
    USP_VPHASE_FWD_A2A, USP_VPHASE_FWD_RING, USP_VPHASE_BWD_A2A, USP_VPHASE_BWD_RING,
    USP_VPHASE_FWD, USP_VPHASE_BWD, USP_VPHASE_TOTAL,
    USP_VPHASE_COUNT
} usp_vphase;

/* "fwd.a2a", "fwd.ring", "bwd.a2a", "bwd.ring", "fwd", "bwd", "total". */
const char *usp_vphase_name(usp_vphase p);

/* Phase times (us) of trace `t` of schedule `s`. Every step of every rank
 * must appear exactly once with the schedule's kind; otherwise USP_EINVAL
 * names the first mismatch (the trace is of another schedule). */
usp_status usp_vphases_of_trace(const usp_schedule *s, const usp_trace *t, double us[USP_VPHASE_COUNT]);

/* The trace's events indexed by step: ev[g][i] for rank g, step i (NULL where
 * missing). Checked as usp_vphases_of_trace does. Free with usp_vsteps_free. */
typedef struct {
    const usp_trace_event ***ev;
    int world;
} usp_vsteps;
usp_status usp_vsteps_index(const usp_schedule *s, const usp_trace *t, usp_vsteps *out);
void usp_vsteps_free(usp_vsteps *v);

/* ---------------------------------------------------------------- cases */

typedef enum { USP_VROLE_CALIBRATION, USP_VROLE_HELD_OUT } usp_vrole;

enum { USP_VCASE_MAX_DOCS = 256, USP_VCASE_MAX_SLICES = 64 };

/* A case's mask as its sidecar gives it (nothing to free). */
typedef struct {
    int ndocs;                             /* "seqlens": document lengths */
    long docs[USP_VCASE_MAX_DOCS];
    int nslices;                           /* "slices" */
    usp_slice slices[USP_VCASE_MAX_SLICES];
    char seqlens_file[1024], mask_file[1024];         /* resolved, or "" */
    char seqlens_file_raw[512], mask_file_raw[512];   /* as the sidecar says */
    int has_window;
    long left, right;                      /* "window", -1 unbounded */
} usp_vcase_mask_spec;

const char *usp_vrole_name(usp_vrole r); /* "calibration", "held-out" */

typedef struct {
    char name[96];          /* file stem: <name>.case.json, <name>.trace.json */
    char dir[512];          /* the sidecar's directory */
    char trace[1024];       /* the measured trace, resolved; "" when there is none */
    usp_config cfg;
    int backward;
    usp_vrole role;
    char profile[1024];     /* built-in name or resolved path */
    char platform[1024];    /* preset spec or resolved path */
    char profile_raw[512], platform_raw[512]; /* as the sidecar says */
    double bound_pct;       /* the largest |error| of TOTAL allowed */
    double measured_fwd_ms, measured_bwd_ms; /* median of `iters` timed runs; 0 if absent */
    int iters;
    char device[96];
    usp_vcase_mask_spec mask;  /* cfg.mask stays NULL: usp_vcase_mask builds it */
} usp_vcase;

/* Whether the case has a mask, and the mask itself (*out NULL when none;
 * free with usp_mask_free after the schedules built with it). */
int usp_vcase_has_mask(const usp_vcase *c);
usp_status usp_vcase_mask(const usp_vcase *c, usp_mask **out);
/* usp_schedule_build of the case's configuration with its mask; *mask
 * (NULL when none) outlives the schedule: free it after usp_schedule_free. */
usp_status usp_vcase_schedule(const usp_vcase *c, usp_schedule *s, usp_mask **mask);

/* Reads a sidecar. Refuses missing or malformed fields with the file and line. */
usp_status usp_vcase_read(const char *sidecar, usp_vcase *c);
/* Writes c as a sidecar; its trace field is "<name>.trace.json", or null
 * when c->trace is empty. */
usp_status usp_vcase_write(const usp_vcase *c, const char *sidecar);

/* Every <name>.case.json of `dir`, in name order. A <name>.trace.json
 * without its sidecar is refused (its configuration would be unknown).
 * Free *cases with free(). */
usp_status usp_vcase_list(const char *dir, usp_vcase **cases, int *count);

/* ------------------------------------------------------ re-simulation */

typedef struct {
    double measured_us[USP_VPHASE_COUNT], predicted_us[USP_VPHASE_COUNT];
    /* NAN where the phase is absent from both, or was not measured (NAN measured_us) */
    double error_pct[USP_VPHASE_COUNT];
} usp_vcompare;

/* Re-simulates case c in timing-only mode with its profile and platform
 * (or `profile` / `platform` when not NULL) and compares phase by phase.
 * `predicted`, when not NULL, receives the simulated trace (caller frees).
 * Needs the simulator (usp_sim). */
usp_status usp_vcase_validate(const usp_vcase *c, const char *profile, const char *platform,
                              usp_vcompare *out, usp_trace *predicted);

/* Mean and largest |error| per phase over the cases that have the phase. */
typedef struct {
    int cases;
    int count[USP_VPHASE_COUNT];
    double mean_abs_pct[USP_VPHASE_COUNT], max_abs_pct[USP_VPHASE_COUNT];
} usp_vsummary;

void usp_vsummary_make(const usp_vcompare *cmp, const int *include, int n, usp_vsummary *out);

/* ------------------------------------------------------------ fitting */

/* t = lat + x / rate, fitted by least squares on relative residuals
 * ((fit - t) / t), so small and large points count alike. A negative
 * intercept is refitted as 0. Residuals in percent. */
typedef struct {
    double intercept, slope;       /* t = intercept + slope * x */
    double rms_pct, max_pct;       /* of (fit - t) / t */
    int points;
} usp_affine_fit;

usp_status usp_fit_affine(const double *x, const double *t, int n, usp_affine_fit *out);

/* Attention kernel times with short blocks (validate_short.c):
 *   t = fixed + FLOPs / rate x (1 + short_len / len)
 * len the tokens the kernel loops over (keys forward, query rows backward).
 * Least squares on relative residuals; a term the data cannot carry (it
 * comes out negative) is dropped. */
typedef struct {
    double fixed_s, rate, short_len; /* s, FLOP/s, tokens */
    double rms_pct, max_pct;
    int points;
} usp_short_fit;

usp_status usp_fit_short_block(const double *len, const double *flops, const double *t, int n,
                               usp_short_fit *out);

/* ------------------------------------- fitted platforms (profiles: usp/profile.h) */

/* A platform of `gpus` GPUs whose every GPU-to-GPU transfer takes
 * lat_us + bytes / (gbps * 1e9): two GPUs on one split-duplex link, more on
 * one router with half the latency on each GPU's link. SimGrid XML. */
usp_status usp_platform_write_fitted(FILE *f, const char *id, int gpus, double lat_us, double gbps,
                                     const char *comment);

/* ------------------------------------------- calibration measurements */

/* What `usp calibrate` measures on the GPU machine, and what it is written
 * to and read back from (JSON), so that the fits can be redone anywhere. */
typedef struct {
    usp_dtype dtype;
    int head_dim, seq, heads;
    int backward, causal;          /* causal: the block's own causal mask (diagonal) */
    double flops, seconds;
    /* doc > 0: the block packs documents of doc tokens (the last one shorter), causal inside,
     * run with per-row masks; tile_flops, loop_flops: the kernels' tiles and units' loop of it
     * (usp/dispatch.h, as the schedule counts them: usp_step) */
    int doc;
    double tile_flops, loop_flops;
} usp_calib_attn;

typedef struct {
    char kind[16];                 /* "pack", "unpack", "merge", "init", "bwd_prep" */
    double bytes, seconds;
} usp_calib_mem;

typedef struct {
    char op[16];                   /* "sendrecv", "all_to_all" */
    double bytes, seconds;         /* bytes one rank sends to its peer */
} usp_calib_comm;

enum { USP_CALIB_MAX = 512 };

typedef struct {
    char device[96];
    char source[256];              /* where the figures come from, when not this program */
    int gpus;
    int nccl_version;
    double memory_gb;
    double launch_us;              /* an almost empty kernel, event to event */
    usp_calib_attn attn[USP_CALIB_MAX];
    int nattn;
    usp_calib_mem mem[64];
    int nmem;
    usp_calib_comm comm[USP_CALIB_MAX];
    int ncomm;
} usp_calib;

usp_status usp_calib_write(const usp_calib *m, FILE *f);
usp_status usp_calib_save(const usp_calib *m, const char *path);
usp_status usp_calib_read(const char *path, usp_calib *m);

/* What the fits give. */
typedef struct {
    usp_profile_desc profile;
    usp_affine_fit link;           /* seconds against bytes, every comm point >= min_bytes */
    usp_affine_fit link_sendrecv, link_all_to_all;
    double lat_us, gbps;           /* of `link` */
} usp_calib_fit;

/* Fits the profile and the link from measurements: attention TFLOP/s per
 * (dtype, head dim, direction) from the slope of time against FLOPs of the
 * full blocks; the masked efficiency from the causal blocks; the memory
 * bandwidth of each memory-bound kernel kind (memory_gbps) and, over all of
 * them, hbm_gbps (bytes over time, summed); the
 * launch overhead; the link from every comm point of at least min_bytes.
 * `base` (may be NULL) supplies what was not measured (fp64 figures, peaks).
 * short_blocks: each full-block rate from the short-block fit (rate, fixed time,
 * short length) where it converges, instead of the affine fit.
 * `report` (may be NULL) gets the tables with the fits' residuals. */
usp_status usp_calib_fit_run(const usp_calib *m, const usp_profile_desc *base, double min_bytes,
                             int short_blocks, FILE *report, usp_calib_fit *out);

/* Refits, from the calibration cases among `cases`, the attention rates of
 * the (dtype, head dim) keys they use, the masked efficiencies, the memory
 * bandwidth (hbm_gbps over every memory-bound step; memory_gbps of each kind
 * with at least USP_REFINE_MIN_MEM_STEPS steps) and the launch overhead of p (the step durations of the measured
 * traces, summed: the fitted profile reproduces the calibration cases' busy
 * time). `report` (may be NULL) gets what changed. */
enum { USP_REFINE_MIN_MEM_STEPS = 8 };
usp_status usp_profile_refine(usp_profile_desc *p, const usp_vcase *cases, int n, FILE *report);

/* Fits the link (seconds = intercept + slope * bytes) to the SENDRECV and
 * ALL_TO_ALL steps of the calibration cases' traces of at least min_bytes a
 * message: a transfer's time runs from the later of its two ends posting to
 * the step's end. *gpus gets the largest world of those cases. Where no
 * NCCL sweep was run, this is the platform's link. */
usp_status usp_link_fit_traces(const usp_vcase *cases, int n, double min_bytes, FILE *report, usp_affine_fit *out,
                               int *gpus);

#endif
