/* fuzz_json: the JSON reader (core/json.c) against jansson on any bytes.
 * Both must accept or refuse alike, and accepted documents must give the
 * same tree, except where they differ on purpose (core/json.c): usp reads
 * every number as a double (jansson refuses integers beyond int64), skips a
 * UTF-8 byte order mark, passes non-UTF-8 bytes through in strings (jansson
 * refuses them), and stops at a nesting depth of 256 (jansson 2048). A
 * disagreement aborts, which libFuzzer reports as a finding. */
#include <jansson.h>
#include "fuzz_util.h"
#include "usp/json.h"
#include "../json_same_tree.h"

/* Inputs where the two may rightly disagree. */
static int outside_common_ground(const uint8_t *data, size_t size, const json_error_t *err, int jansson_ok) {
    if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) return 1;
    int depth = 0, max_depth = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '[' || data[i] == '{') depth++;
        if (depth > max_depth) max_depth = depth;
        if (data[i] >= 0x80) return 1; /* UTF-8 validation: jansson's, not usp's */
        if (data[i] == '\0') return 1; /* jansson stops at a NUL byte (json_loadb does not, but the length...) */
    }
    if (max_depth >= USP_JSON_MAX_DEPTH) return 1;
    if (!jansson_ok && (strstr(err->text, "too big") || strstr(err->text, "invalid Unicode") ||
                        strstr(err->text, "\\u0000")))
        return 1;
    /* jansson reads integers as int64: 1e3 is real, 1000 is integer, both compare as numbers */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    usp_json *u = NULL;
    usp_status st = usp_json_parse((const char *)data, size, &u);
    json_error_t err;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!outside_common_ground(data, size, &err, j != NULL)) {
        if ((st == USP_OK) != (j != NULL)) {
            fprintf(stderr, "usp %s, jansson %s\n", st == USP_OK ? "accepts" : usp_error(), j ? "accepts" : err.text);
            abort();
        }
        if (u && !same_tree(u, j)) {
            fprintf(stderr, "the trees differ\n");
            abort();
        }
    }
    usp_json_free(u);
    json_decref(j);
    return 0;
}
