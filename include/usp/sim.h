/* usp/sim.h: the SimGrid executor, its platforms and device profiles.
 *
 * usp_sim_execute() runs a schedule on a simulated machine: every rank is a
 * SimGrid actor pair (a compute stream and a comm stream), messages cross the
 * platform's links, compute steps last what the device profile says. With
 * numerics on, real shards travel and the CPU block kernels compute, so the
 * outputs are bit-identical to usp_ref_execute(); with numerics off only
 * sizes travel (no tensor memory), for thousands of ranks.
 *
 * SimGrid can be initialized once per process, so each simulation runs in a
 * forked child that sends its result back through a pipe: callers may
 * simulate as often as they like.
 *
 * Platforms are named by a spec: a preset ("h200x8", "h100-fattree",
 * "torus:dims=4x4x4") or a SimGrid XML file. Presets with a variable size
 * are sized for the world unless the spec says otherwise. */
#ifndef USP_SIM_H
#define USP_SIM_H

#include <stdio.h>
#include "usp/executor.h"

#define USP_SIM_MAX_CFG 8

typedef struct {
    const char *platform;  /* preset spec or SimGrid XML file; NULL: "h200x8" */
    const char *hostmap;   /* file of host names, one per line, line i = rank i;
                            * NULL: hosts in natural name order (gpu2 before gpu10) */
    const char *profile;   /* device profile: JSON file or built-in name ("h200");
                            * NULL: the preset's GPU (h200 for an XML file) */
    int numerics;          /* 1: real shards and CPU kernels (needs inputs) */
    const char *cfg_overrides[USP_SIM_MAX_CFG]; /* SimGrid settings "name:value" */
    int ncfg;
    int no_fold;           /* 1: give every rank an actor even where one per
                            * ulysses group gives the same times (sim/README.md) */
} usp_sim_options;

/* Runs `s` on the simulated platform. `in` is required when o->numerics is
 * set (out must then have been initialized with outputs) and ignored
 * otherwise. `out` must have been set up with usp_result_init(); its times
 * and per-rank statistics are filled. `trace` may be NULL. */
usp_status usp_sim_execute(const usp_schedule *s, const usp_inputs *in, const usp_sim_options *o,
                           usp_result *out, usp_trace *trace);

/* What usp_sim_execute would refuse about its options, checked before a
 * schedule is built or an input allocated: the device profile (each figure
 * within its physical range) and its dtype, that a platform file exists, the
 * host map (a name for every rank, no host named twice). Routes between the
 * ranks' hosts need the loaded platform: usp_sim_execute checks them before
 * the simulation starts. */
usp_status usp_sim_check_options(const usp_sim_options *o, const usp_config *c);

/* Bytes a timing-only simulation of cfg is expected to take at its peak (an
 * estimate fitted to measured runs, sim/engine/memory.c), and USP_EINVAL
 * with the estimate when that is more than this machine has available:
 * checked before the schedule or anything else is allocated. */
double usp_sim_memory_estimate(const usp_config *cfg, int backward);
usp_status usp_sim_check_memory(const usp_config *cfg, int backward);

/* ---------------------------------------------------------- the summary */

/* The share of a card's memory a training process can hold in tensors: the
 * rest goes to the CUDA context (about 0.4 GB with lazy module loading,
 * pytorch/pytorch issue 109888), NCCL's buffers (0.54-0.69 GB per
 * communicator on 4 x A100 over NVLink, NVIDIA/nccl issue 964; a training
 * mix uses about three: TP or Ulysses, ring, data parallel) and the caching
 * allocator's reserved-but-unallocated blocks (1.83 GiB beside 75.31 GiB
 * allocated, 2.4%, vllm-project/compressed-tensors pull 587). On an 80 GiB
 * card (85.9 GB) that is 0.4 + 2.1 + 2.0 = 4.5 GB, 5.2%: 0.95 is kept
 * (sim/SOURCES.md, "GPU memory"). The planner's and usp run's memory
 * figures are tensors only; both compare them with this share. */
#define USP_MEMORY_USABLE_FRACTION 0.95

/* What a simulated run says beyond usp_result: efficiency and memory. */
typedef struct {
    char platform[128];        /* spec as given, or the file */
    char gpu[64];              /* device profile name, "NVIDIA H200 SXM" */
    char profile[128];         /* the profile as named (built-in name or file) */
    char kernel[96];           /* the attention kernel its rates are of ("" unnamed) */
    int numerics;
    double time_fwd_s, time_bwd_s, time_total_s;
    double flops_per_gpu;      /* forward + backward, mean over ranks */
    double tflops_per_gpu;     /* flops_per_gpu / time_total_s / 1e12 */
    double peak_dense_tflops;  /* the profile's peak for the dtype */
    double mfu;                /* tflops_per_gpu / peak_dense_tflops */
    double compute_s_max, comm_s_max, exposed_comm_s_max; /* over ranks */
    double exposed_comm_s_mean;
    double peak_bytes_max;     /* live activations of the busiest rank */
    int peak_rank;
    double capacity_bytes;     /* the GPU's memory */
    double usable_bytes;       /* USP_MEMORY_USABLE_FRACTION of it */
    int oom;                   /* 1 when peak_bytes_max exceeds usable_bytes */
    int world, ranks_simulated; /* fewer when folded: one rank per ulysses group */
    int ulysses;
    char not_folded[160];      /* timing only, ulysses > 1, not folded: why */
    char caveat[640];          /* usp_platform_caveat of the run ("" none; not with a host map) */
} usp_sim_report;

/* Derives the report of a finished run (loads the profile named by o). */
usp_status usp_sim_report_make(const usp_schedule *s, const usp_result *r, const usp_sim_options *o,
                               usp_sim_report *rep);
/* The "sim" section of usp run's summary: readable lines, or one JSON
 * object (no trailing newline) to place as the value of a "sim" member. */
void usp_sim_report_print(FILE *f, const usp_sim_report *rep);
void usp_sim_report_json(FILE *f, const usp_sim_report *rep);
/* `prefix`, then "on PLATFORM, CAVEAT" (usp_platform_caveat's text) in lines of
 * at most 100 columns, the lines after the first indented as wide as the prefix:
 * usp run's caveat line, and the footnote of usp sweep's and plan's tables. */
void usp_caveat_print(FILE *f, const char *prefix, const char *platform, const char *caveat);

/* ------------------------------------------------------------ platforms */

/* Size parameters of a preset; 0 means "the preset's default, or what the
 * world needs". */
typedef struct {
    int nodes;                /* multi-node presets */
    int dims[3];              /* torus */
    int groups, chassis, routers, hosts_per_router; /* dragonfly */
    double bw_gbps, lat_us;   /* torus, dragonfly, star: per link */
    /* machine presets (0: the preset's own figure) */
    int gpus, per_switch, sockets, pcie_gen; /* pcie: GPUs, GPUs per PCIe switch
                                                (-1: on CPU root ports), sockets, Gen */
    double mem_gbps, cpu_link_gbps;          /* host memory, CPU-to-CPU link, GB/s */
    double call_us, nvls_eff, a2a_eff;       /* NCCL costs (sim/network/nccl.h) */
    int channels;
    int p2p_level;            /* 0: the preset's; 1: pxb (P2P under a PCIe switch only);
                                 2: sys (P2P through the CPU too) */
} usp_platform_params;

/* Writes the SimGrid XML of preset `name` sized for `world` ranks (0: the
 * preset's default size). Unknown names and impossible sizes: USP_EINVAL. */
usp_status usp_platform_write(const char *name, const usp_platform_params *p, int world, FILE *f);

/* Parses "name[:key=value,...]" (keys: nodes, dims=AxBxC, groups, chassis,
 * routers, hosts, bw (GB/s), lat (us); machine presets also gpus, per-switch,
 * sockets, gen, mem, upi (GB/s), call-us, nvls, a2a, channels, p2p=pxb|sys) into a preset
 * name and parameters.
 * Returns USP_EINVAL on an unknown preset or key. */
usp_status usp_platform_parse_spec(const char *spec, char *name, size_t n, usp_platform_params *p);

/* A platform from a real server's topology: `nvidia-smi topo -m` output or an
 * NCCL topology dump (XML, NCCL_TOPO_DUMP_FILE; needs libxml2), written as
 * SimGrid XML with the topology props of the network layer. */
typedef struct {
    int nodes;     /* 0 or 1: one server; N: N of them, NIC i of each on rail i */
    int pcie_gen;  /* 0: Gen4 (nvidia-smi topo -m does not say) */
    double nvswitch_gbps; /* > 0: every GPU on one NVSwitch at this achieved GB/s
                             (topology files for NCCL_TOPO_FILE omit NVLink) */
    int p2p_sys;   /* 1: NCCL's P2P level SYS, P2P through the CPU where the
                      topology gives SHM (NCCL before 2.23.4 on AMD hosts) */
} usp_topo_options;
usp_status usp_platform_from_topo(const char *path, const usp_topo_options *o, FILE *out);

/* 1 if `spec` names a preset (possibly with parameters), 0 if it is a file. */
int usp_platform_is_preset(const char *spec);

/* The built-in device profile a preset's GPUs use ("h200"), or NULL. */
const char *usp_platform_gpu(const char *name);

/* Where published end-to-end measurements of a machine like the platform
 * `spec` put the model far off for the run `c` (its ulysses groups, ranks on
 * the hosts in order): NULL, or one clause naming the evidence and where it is
 * written up. Today: all-to-alls through host memory (SHM), and rings across
 * more than two nodes, on a machine preset. usp run, sweep and plan print it
 * beside their predictions. */
const char *usp_platform_caveat(const char *spec, const usp_config *c);
/* Groups of ranks that talk together: rank g's group is g + k * stride
 * (k < size) from the rank whose (g / stride) % size is 0. */
typedef struct { int size, stride; } usp_platform_group;
/* The same for any all-to-all groups and ring groups among `world` ranks
 * (either may be NULL; usp_platform_caveat: ulysses inside, stride 1, and the
 * ring outside, stride ulysses, or the other way round). */
const char *usp_platform_caveat_groups(const char *spec, int world, const usp_platform_group *a2a,
                                       const usp_platform_group *ring);

/* Preset names, NULL-terminated, and a one-line description of each. */
const char *const *usp_platform_presets(void);
const char *usp_platform_describe(const char *name);

/* ------------------------------------------------------- device profiles */

/* Built-in profile names, NULL-terminated ("a100", "a800", "h100", "h200", "l20"). */
const char *const *usp_profile_names(void);
/* Checks that a profile (file or built-in name) loads: every field present. */
usp_status usp_profile_check(const char *name_or_file);

/* --------------------------------------------------------------- sweeps */

typedef struct {
    usp_config cfg;
    usp_status status;        /* USP_OK, or why this point did not run */
    char why[160];
    double time_fwd_s, time_bwd_s, time_total_s;
    double compute_s, exposed_comm_s; /* of the rank with the most compute */
    double peak_bytes;
    int oom;
    double mfu;
    const char *caveat;       /* usp_platform_caveat of the point (NULL: none; not with a host map) */
} usp_sweep_point;

typedef struct {
    usp_sweep_point *points;  /* ranked: runnable ones by time, then the refused */
    int count, ran;
} usp_sweep;

/* Every ulysses x ring factorization of world x ring_impl x layout of the
 * problem in `base` (its ulysses/ring/ring_impl/layout are ignored), timed
 * in timing-only mode with forward and backward. Points that do not apply
 * (layout with a degree of 1, ring_impl with ring 1) are left out; points
 * the configuration refuses are kept with their reason. progress, when not
 * NULL, gets one "\r..." line per point. */
usp_status usp_sweep_run(const usp_config *base, int world, const usp_sim_options *o,
                         FILE *progress, usp_sweep *out);
void usp_sweep_free(usp_sweep *sw);

void usp_sweep_print_table(FILE *f, const usp_sweep *sw);
void usp_sweep_print_csv(FILE *f, const usp_sweep *sw);
void usp_sweep_print_json(FILE *f, const usp_sweep *sw, const char *platform);
/* A bar per configuration: predicted time split into compute and exposed
 * communication. */
usp_status usp_sweep_write_svg(const usp_sweep *sw, const char *title, const char *path);

#endif
