/* validate.c: a recorded GPU case re-simulated and compared phase by phase
 * (usp_vcase_validate of usp/validate.h). Needs the simulator. */
#define _POSIX_C_SOURCE 200809L
#include "usp/validate.h"

#include <math.h>
#include <string.h>
#include "usp/sim.h"
#include "usp/trace_read.h"

/* A case without a trace: its forward and backward medians; the phases
 * inside them were not measured. */
static void measured_totals(const usp_vcase *c, double us[USP_VPHASE_COUNT]) {
    for (int p = 0; p < USP_VPHASE_COUNT; p++) us[p] = NAN;
    us[USP_VPHASE_FWD] = c->measured_fwd_ms * 1e3;
    us[USP_VPHASE_BWD] = c->backward ? c->measured_bwd_ms * 1e3 : 0;
    us[USP_VPHASE_TOTAL] = us[USP_VPHASE_FWD] + us[USP_VPHASE_BWD];
}

static usp_status measured_phases(const usp_vcase *c, const usp_schedule *s, double us[USP_VPHASE_COUNT]) {
    if (!c->trace[0]) { measured_totals(c, us); return USP_OK; }
    usp_trace t;
    USP_TRY(usp_trace_read(c->trace, &t));
    usp_status st = usp_vphases_of_trace(s, &t, us);
    if (st != USP_OK) usp_error_prefix("%s: ", c->trace);
    usp_trace_free(&t);
    return st;
}

static usp_status predicted_phases(const usp_vcase *c, const usp_schedule *s, const char *profile,
                                   const char *platform, double us[USP_VPHASE_COUNT], usp_trace *keep) {
    usp_sim_options o = {.platform = platform ? platform : c->platform, .profile = profile ? profile : c->profile};
    usp_result r;
    usp_trace t;
    USP_TRY(usp_result_init(&r, s, 0));
    usp_trace_init(&t, "sim", &s->cfg);
    usp_status st = usp_sim_execute(s, NULL, &o, &r, &t);
    if (st == USP_OK) st = usp_vphases_of_trace(s, &t, us);
    usp_result_free(&r);
    if (st == USP_OK && keep) *keep = t;
    else usp_trace_free(&t);
    return st;
}

static double error_pct(double measured, double predicted) {
    if (isnan(measured) || (measured == 0 && predicted == 0)) return NAN;
    if (measured == 0) return INFINITY;
    return 100 * (predicted - measured) / measured;
}

usp_status usp_vcase_validate(const usp_vcase *c, const char *profile, const char *platform, usp_vcompare *out,
                              usp_trace *predicted) {
    usp_schedule s;
    usp_mask *mask = NULL;
    memset(out, 0, sizeof *out);
    USP_TRY(usp_vcase_schedule(c, &s, &mask));
    usp_status st = measured_phases(c, &s, out->measured_us);
    if (st == USP_OK) st = predicted_phases(c, &s, profile, platform, out->predicted_us, predicted);
    for (int p = 0; p < USP_VPHASE_COUNT; p++) out->error_pct[p] = error_pct(out->measured_us[p], out->predicted_us[p]);
    usp_schedule_free(&s);
    usp_mask_free(mask);
    if (st != USP_OK) usp_error_prefix("case %s: ", c->name);
    return st;
}

void usp_vsummary_make(const usp_vcompare *cmp, const int *include, int n, usp_vsummary *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < n; i++) {
        if (include && !include[i]) continue;
        out->cases++;
        for (int p = 0; p < USP_VPHASE_COUNT; p++) {
            double e = fabs(cmp[i].error_pct[p]);
            if (isnan(e)) continue;
            out->count[p]++;
            out->mean_abs_pct[p] += e;
            if (e > out->max_abs_pct[p]) out->max_abs_pct[p] = e;
        }
    }
    for (int p = 0; p < USP_VPHASE_COUNT; p++)
        if (out->count[p]) out->mean_abs_pct[p] /= out->count[p];
}
