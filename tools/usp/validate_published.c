/* validate_published.c: usp validate --published [DIR]: every published
 * table of DIR (default traces/published) re-predicted by the simulator,
 * printed row by row with the statistics per table (usp/published.h holds
 * the logic; this file only reads the options' result and prints). */
#include "validate_published.h"

#include <stdlib.h>
#include <string.h>
#include "cli.h"
#ifdef USP_HAVE_SIM
#include "usp/published.h"
#endif

char **usp_validate_join_published(int argc, char **argv, int *joined_argc) {
    char **out = calloc((size_t)argc + 1, sizeof *out);
    if (!out) return NULL;
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--published") && i + 1 < argc && argv[i + 1][0] != '-') {
            size_t len = strlen("--published=") + strlen(argv[i + 1]) + 1;
            char *joined = malloc(len);
            if (!joined) { usp_validate_free_joined(out); return NULL; }
            snprintf(joined, len, "--published=%s", argv[++i]);
            out[n++] = joined;
        } else {
            out[n++] = strdup(argv[i]);
            if (!out[n - 1]) { usp_validate_free_joined(out); return NULL; }
        }
    }
    *joined_argc = n;
    return out;
}

void usp_validate_free_joined(char **argv) {
    for (int i = 0; argv && argv[i]; i++) free(argv[i]);
    free(argv);
}

#ifdef USP_HAVE_SIM

int usp_validate_published(const char *dir, const char *profile, const char *platform, int json, int quiet) {
    usp_pub_table *tables;
    int n;
    usp_status st = usp_pub_tables_read(dir, &tables, &n);
    if (st != USP_OK) return usp_cli_report("validate", st);
    for (int i = 0; i < n && st == USP_OK; i++)
        st = usp_pub_predict(&tables[i], platform, profile, quiet ? NULL : stderr);
    if (st != USP_OK) {
        usp_pub_tables_free(tables, n);
        return usp_cli_report("validate", st);
    }
    if (json) usp_pub_print_json(stdout, tables, n);
    else usp_pub_print(stdout, tables, n);
    usp_pub_tables_free(tables, n);
    return 0;
}

#else

int usp_validate_published(const char *dir, const char *profile, const char *platform, int json, int quiet) {
    (void)dir; (void)profile; (void)platform; (void)json; (void)quiet;
    return usp_cli_bad_input("validate", "this usp was built without SimGrid: --published cannot predict "
                                         "(install libsimgrid-dev and rebuild)");
}

#endif
