/* cmd_sweep.c: `usp sweep`. */
#include "cli.h"

int cmd_sweep(int argc, char **argv) {
    (void)argc; (void)argv;
    return usp_cli_bad_input("sweep", "not available in this build");
}
