/* fuzz_mask: the mask inputs (core/mask.c): --seqlens "l1,l2,...",
 * --window "LEFT,RIGHT", --mask FILE.json and --seqlens-file (.npy), from
 * any bytes. The first byte picks the input and the problem (seq, batch);
 * a mask that builds is then asked about every block. */
#include "fuzz_util.h"
#include "usp/mask.h"

/* Problems small enough that every (q, k) of a mask can be asked about.
 * (seq 0, "the length the documents add up to", lets a 4-byte .npy ask for
 * a mask of 2^30 tokens, gigabytes, which libFuzzer reports as out of
 * memory: that path is tested in test_refusals instead.) */
static const long SEQS[] = {1, 7, 64, 96, 256, 1000};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] & 3, batch = 1 + ((data[0] >> 2) & 1);
    long seq = SEQS[(data[0] >> 3) % (sizeof SEQS / sizeof SEQS[0])];
    data++, size--;
    usp_mask_spec spec = {0};
    spec.causal = (data[-1] >> 6) & 1;
    char *text = fuzz_text(data, size);
    if (which == 0) {
        spec.seqlens = text;
        long *lens = NULL;
        int count = 0;
        if (usp_mask_parse_seqlens(text, &lens, &count) == USP_OK) free(lens);
    } else if (which == 1) {
        spec.window = text;
        long left, right;
        usp_mask_parse_window(text, &left, &right);
    } else if (which == 2) {
        spec.mask_file = fuzz_file(data, size, ".json");
    } else {
        spec.seqlens_file = fuzz_file(data, size, ".npy");
    }
    usp_mask *m = NULL;
    if (usp_mask_build(&spec, seq, batch, &m) == USP_OK) {
        long L = usp_mask_seq(m);
        volatile long seen = 0;
        for (int b = 0; b < batch && L <= 256; b++)
            for (long q = 0; q < L; q++)
                for (long k = 0; k < L; k++) seen += usp_mask_sees(m, b, q, k);
        (void)seen;
        usp_mask_free(m);
    }
    free(text);
    return 0;
}
