/* cli.h: what the `usp` subcommands share.
 *
 * Each subcommand lives in its own cmd_<name>.c with
 *   int cmd_<name>(int argc, char **argv);
 * and returns the process exit code: 0 success, 1 a check failed or an
 * internal error, 2 bad input (after printing "usp: <cmd>: <why>"). */
#ifndef USP_CLI_H
#define USP_CLI_H

#include <getopt.h>
#include <stdio.h>
#include "usp/config.h"

/* Long options every command that takes a problem accepts, to splice into a
 * getopt_long table: --batch --seq --heads --kv-heads --head-dim --causal
 * --no-causal --scale --dtype --ulysses --ring --ring-impl --layout --seed
 * and the mask: --seqlens --seqlens-file --window --mask, --contiguous, --wire,
 * --dkv-serial.
 * Their codes are USP_OPT_CONFIG_FIRST .. USP_OPT_CONFIG_LAST; commands use
 * codes from USP_OPT_CMD_FIRST upwards for their own long options. */
enum {
    USP_OPT_CONFIG_FIRST = 1000,
    USP_OPT_BATCH = USP_OPT_CONFIG_FIRST, USP_OPT_SEQ, USP_OPT_HEADS, USP_OPT_KV_HEADS,
    USP_OPT_HEAD_DIM, USP_OPT_CAUSAL, USP_OPT_NO_CAUSAL, USP_OPT_SCALE, USP_OPT_DTYPE,
    USP_OPT_ULYSSES, USP_OPT_RING, USP_OPT_RING_IMPL, USP_OPT_LAYOUT, USP_OPT_SEED,
    USP_OPT_SEQLENS, USP_OPT_SEQLENS_FILE, USP_OPT_WINDOW, USP_OPT_MASK, USP_OPT_WIRE, USP_OPT_DKV_SERIAL,
    USP_OPT_CONTIGUOUS, USP_OPT_CONFIG_LAST = USP_OPT_CONTIGUOUS,
    USP_OPT_CMD_FIRST = 1100
};
#define USP_CLI_CONFIG_LONGOPTS                                   \
    {"batch", required_argument, 0, USP_OPT_BATCH},               \
    {"seq", required_argument, 0, USP_OPT_SEQ},                   \
    {"heads", required_argument, 0, USP_OPT_HEADS},               \
    {"kv-heads", required_argument, 0, USP_OPT_KV_HEADS},         \
    {"head-dim", required_argument, 0, USP_OPT_HEAD_DIM},         \
    {"causal", no_argument, 0, USP_OPT_CAUSAL},                   \
    {"no-causal", no_argument, 0, USP_OPT_NO_CAUSAL},             \
    {"scale", required_argument, 0, USP_OPT_SCALE},               \
    {"dtype", required_argument, 0, USP_OPT_DTYPE},               \
    {"ulysses", required_argument, 0, USP_OPT_ULYSSES},           \
    {"ring", required_argument, 0, USP_OPT_RING},                 \
    {"ring-impl", required_argument, 0, USP_OPT_RING_IMPL},       \
    {"layout", required_argument, 0, USP_OPT_LAYOUT},             \
    {"seed", required_argument, 0, USP_OPT_SEED},                 \
    {"seqlens", required_argument, 0, USP_OPT_SEQLENS},           \
    {"seqlens-file", required_argument, 0, USP_OPT_SEQLENS_FILE}, \
    {"window", required_argument, 0, USP_OPT_WINDOW},             \
    {"mask", required_argument, 0, USP_OPT_MASK},                 \
    {"wire", required_argument, 0, USP_OPT_WIRE},                 \
    {"dkv-serial", no_argument, 0, USP_OPT_DKV_SERIAL},           \
    {"contiguous", no_argument, 0, USP_OPT_CONTIGUOUS}

/* Applies one parsed config option. Returns 1 if `opt` was a config option,
 * 0 if not; on a bad value prints "usp: <cmd>: <why>" and returns -1.
 * --kv-heads defaults to --heads when not given (see usp_cli_config_finish). */
int usp_cli_config_option(const char *cmd, int opt, const char *arg, usp_config *cfg);
/* Call after parsing: fills defaults that depend on other options and builds
 * the mask the mask options describe (kept until the process ends; --seq
 * defaults to the documents' total). 0, or 2 after printing why not. */
int usp_cli_config_finish(const char *cmd, usp_config *cfg);
/* The config options' --help lines. */
void usp_cli_config_help(FILE *f);

/* Prints "usp: <cmd>: <message>" on stderr and returns 2. */
int usp_cli_bad_input(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "usp: <cmd>: " + usp_error() and returns 2 or 1 by the status. */
int usp_cli_report(const char *cmd, int status);

/* Strict number parsing: whole string, in range. 0 on success. */
int usp_parse_int(const char *s, long lo, long hi, long *out);
int usp_parse_double(const char *s, double *out);

/* The value of --<name> as an integer in lo..hi: 0, or after printing
 * "usp: <cmd>: --<name> '<arg>' is not an integer in lo..hi", 2. */
int usp_cli_int_option(const char *cmd, const char *name, const char *arg, long lo, long hi, int *out);
/* The value of --<name> as a positive number of seconds: 0, or 2 after
 * saying why not. */
int usp_cli_seconds_option(const char *cmd, const char *name, const char *arg, double *out);

/* getopt_long over `shorts` and `opts` with getopt's own messages off: an
 * unknown option, or one without its value, is refused in one line ("usp:
 * <cmd>: unknown option '--x' (usp <help_cmd> --help)", "...: option '--seq'
 * needs a value ...") and '?' is returned; else what getopt_long returns. */
int usp_cli_getopt(const char *cmd, const char *help_cmd, int argc, char **argv, const char *shorts,
                   const struct option *opts);

/* Applies one option of a command to its settings (ctx): 0, or the exit
 * code of a refusal (already printed). */
typedef int (*usp_cli_apply_fn)(int opt, const char *arg, void *ctx);
/* Parses argv with getopt_long over opts (long options only): the option
 * coded help_opt prints help() and gives -1; each other one goes to apply,
 * and its first non-zero answer is returned; an argument that is not an
 * option is refused (2). 0: every option applied. */
int usp_cli_parse(const char *cmd, int argc, char **argv, const struct option *opts, int help_opt,
                  void (*help)(void), usp_cli_apply_fn apply, void *ctx);

/* Subcommands (those of a backend that was not built say so and return 2). */
int cmd_run(int argc, char **argv);
int cmd_schedule(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_platform(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_kernel_check(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_costs(int argc, char **argv);
int cmd_nccl(int argc, char **argv);

#endif
