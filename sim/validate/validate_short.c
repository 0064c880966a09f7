/* validate_short.c: the short-block fit of attention kernel times
 * (usp_fit_short_block, usp/validate.h).
 *
 *   t = fixed + FLOPs / rate x (1 + short / n)
 *
 * n is the length the kernel loops over (keys for the forward, query rows
 * for the backward): each loop pays a setup (loading its tile, the final
 * rescale, the write) that a short loop does not amortize. With the FLOPs
 * and n of each point the model is linear in (fixed, 1/rate, short/rate):
 * a weighted least-squares fit on relative residuals, as usp_fit_affine.
 * Plain C on usp_core. */
#include "usp/validate.h"

#include <math.h>
#include <string.h>

/* Solves the 3 x 3 system a x = b by Gaussian elimination with pivoting:
 * 0, or -1 when singular. */
static int solve3(double a[3][3], double b[3], double x[3]) {
    for (int i = 0; i < 3; i++) {
        int p = i;
        for (int r = i + 1; r < 3; r++)
            if (fabs(a[r][i]) > fabs(a[p][i])) p = r;
        if (!(fabs(a[p][i]) > 0)) return -1;
        for (int c = 0; c < 3; c++) { double t = a[i][c]; a[i][c] = a[p][c]; a[p][c] = t; }
        double t = b[i]; b[i] = b[p]; b[p] = t;
        for (int r = 0; r < 3; r++) {
            if (r == i) continue;
            double f = a[r][i] / a[i][i];
            for (int c = 0; c < 3; c++) a[r][c] -= f * a[i][c];
            b[r] -= f * b[i];
        }
    }
    for (int i = 0; i < 3; i++) x[i] = b[i] / a[i][i];
    return 0;
}

/* Least squares over the columns that `use` keeps (1, F, F / n). */
static int fit_columns(const double *len, const double *flops, const double *t, int n, const int use[3],
                       double coef[3]) {
    double a[3][3] = {{0}}, b[3] = {0};
    for (int i = 0; i < n; i++) {
        double col[3] = {1, flops[i], flops[i] / len[i]}, w = 1 / (t[i] * t[i]);
        for (int r = 0; r < 3; r++) {
            b[r] += w * col[r] * t[i];
            for (int c = 0; c < 3; c++) a[r][c] += w * col[r] * col[c];
        }
    }
    for (int r = 0; r < 3; r++)
        if (!use[r]) { /* the column is dropped: its coefficient is 0 */
            for (int c = 0; c < 3; c++) a[r][c] = a[c][r] = 0;
            a[r][r] = 1;
            b[r] = 0;
        }
    return solve3(a, b, coef);
}

usp_status usp_fit_short_block(const double *len, const double *flops, const double *t, int n,
                               usp_short_fit *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return usp_fail(USP_EINVAL, "nothing to fit");
    for (int i = 0; i < n; i++)
        if (!(len[i] > 0 && flops[i] > 0 && t[i] > 0))
            return usp_fail(USP_EINVAL, "fit point %d: length, FLOPs and time must be positive", i);
    /* all three terms; then, when one comes out negative (the data cannot
     * carry it), without it; the rate term always stays */
    static const int TRIES[4][3] = {{1, 1, 1}, {0, 1, 1}, {1, 1, 0}, {0, 1, 0}};
    double c[3] = {0, 0, 0};
    int ok = 0;
    for (int k = 0; k < 4 && !ok; k++) {
        int need = TRIES[k][0] + TRIES[k][1] + TRIES[k][2];
        if (n < need) continue;
        ok = fit_columns(len, flops, t, n, TRIES[k], c) == 0 && c[0] >= 0 && c[1] > 0 && c[2] >= 0;
    }
    if (!ok) return usp_fail(USP_EINVAL, "the times do not grow with the FLOPs");
    out->fixed_s = c[0];
    out->rate = 1 / c[1];
    out->short_len = c[2] / c[1];
    out->points = n;
    double sq = 0, worst = 0;
    for (int i = 0; i < n; i++) {
        double r = (c[0] + c[1] * flops[i] + c[2] * flops[i] / len[i] - t[i]) / t[i];
        sq += r * r;
        if (fabs(r) > fabs(worst)) worst = r;
    }
    out->rms_pct = 100 * sqrt(sq / n);
    out->max_pct = 100 * worst;
    return USP_OK;
}
