/* prof.cuh: what the kernels' phase counters share (USP_GPU_FWD_PROF, USP_GPU_BWD_PROF;
 * measurement only, in PROF instantiations that the default kernels are not).
 *
 * Device: the global timer (ns, one clock for every SM), the SM a CTA runs on, and the
 * CTA's linear index. Host: prof_collect, a call's time, how the SMs' time went over its
 * CTAs and the sums of the CTAs' counters.
 *
 * A record (one a CTA) starts with the words PROF_G0 (start), PROF_END0, PROF_END1 (the two
 * consumer warpgroups' ends) and PROF_SM; the kernel's own counters follow from
 * PROF_COUNTERS. */
#ifndef USP_GPU_PROF_CUH
#define USP_GPU_PROF_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

namespace uspk {

enum { PROF_G0, PROF_END0, PROF_END1, PROF_SM, PROF_COUNTERS };

__device__ __forceinline__ unsigned long long prof_gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ unsigned prof_smid() {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    return sm;
}

__device__ __forceinline__ unsigned prof_cta() {
    return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
}

/* This CTA's record of `words` in records[ctas * words], or NULL past the last. */
__device__ __forceinline__ unsigned long long *prof_record(unsigned long long *records, int words, int ctas) {
    const unsigned cta = prof_cta();
    return cta < (unsigned)ctas ? records + (size_t)cta * words : nullptr;
}

/* Kernel entry (thread 0): the start time and the SM into words g0 and sm of the record. */
__device__ __forceinline__ void prof_entry(unsigned long long *r, int g0, int sm) {
    if (threadIdx.x == 0 && r) {
        r[g0] = prof_gtime();
        r[sm] = prof_smid();
    }
}

/* The environment variable `name` (USP_GPU_FWD_PROF, USP_GPU_BWD_PROF) is "1": count phases. */
inline bool prof_env_on(const char *name) {
    const char *e = getenv(name);
    return e && !strcmp(e, "1");
}

/* After a PROF kernel launched on st after event ev0 (recorded where the call began): waits
 * for it, gives the call's time (ms, -1 if not known) and the words of records (device
 * memory), then zeroes them for the next call; destroys ev0. False if they could not be read. */
inline bool prof_read(void *records, size_t words, cudaEvent_t ev0, cudaStream_t st,
                      std::vector<unsigned long long> &out, float *call_ms) {
    cudaEvent_t ev1 = nullptr;
    *call_ms = -1.0f;
    if (cudaEventCreate(&ev1) == cudaSuccess && cudaEventRecord(ev1, st) == cudaSuccess &&
        cudaEventSynchronize(ev1) == cudaSuccess && ev0)
        (void)cudaEventElapsedTime(call_ms, ev0, ev1);
    (void)cudaGetLastError();
    if (ev1) (void)cudaEventDestroy(ev1);
    if (ev0) (void)cudaEventDestroy(ev0);
    out.assign(words, 0);
    if (cudaStreamSynchronize(st) != cudaSuccess || !records ||
        cudaMemcpy(out.data(), records, words * 8, cudaMemcpyDeviceToHost) != cudaSuccess ||
        cudaMemset(records, 0, words * 8) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return true;
}

/* The SMs' time over a call: the span from the first CTA's start to the last one's end
 * (ns), and of the SMs' time in it (percent) the part CTAs ran, the part idle before an SM's
 * first CTA, after its last and between its CTAs. */
struct ProfSmTime {
    double span_ns, busy, head, tail, between;
    int sms, ctas;
};

/* start, end, sm: a CTA each (end 0: no record); false when no CTA has one. */
inline bool prof_sm_time(const std::vector<unsigned long long> &start, const std::vector<unsigned long long> &end,
                         const std::vector<unsigned long long> &sm, ProfSmTime *out) {
    constexpr int NSM = 1024;
    std::vector<unsigned long long> first(NSM, ~0ull), last(NSM, 0), busy(NSM, 0);
    unsigned long long g0 = ~0ull, g1 = 0;
    int ctas = 0;
    for (size_t i = 0; i < start.size(); ++i) {
        if (!start[i] || !end[i] || sm[i] >= (unsigned long long)NSM) continue;
        const int s = (int)sm[i];
        ++ctas;
        g0 = start[i] < g0 ? start[i] : g0;
        g1 = end[i] > g1 ? end[i] : g1;
        first[s] = start[i] < first[s] ? start[i] : first[s];
        last[s] = end[i] > last[s] ? end[i] : last[s];
        busy[s] += end[i] - start[i];
    }
    if (!ctas || g1 <= g0) return false;
    double sbusy = 0, shead = 0, stail = 0;
    int sms = 0;
    for (int s = 0; s < NSM; ++s)
        if (last[s]) {
            ++sms;
            sbusy += (double)busy[s];
            shead += (double)(first[s] - g0);
            stail += (double)(g1 - last[s]);
        }
    const double span = (double)(g1 - g0), all = span * sms;
    *out = {span, 100.0 * sbusy / all, 100.0 * shead / all, 100.0 * stail / all,
            100.0 * (all - sbusy - shead - stail) / all, sms, ctas};
    return true;
}

/* What prof_collect gives of a call: its time (ms, -1 if not known), the SMs' time, each
 * counter word summed over the CTAs that left a record (sum[w], w >= PROF_COUNTERS; seen of
 * them) and the CTAs that had a record (n). */
struct ProfCall {
    float call_ms;
    ProfSmTime t;
    std::vector<double> sum;
    int seen, n;
};

/* After a PROF kernel of nctas CTAs (records of `words` each in the __device__ array
 * `records`, at most max_ctas) launched on st after event ev0: *c. The records are zeroed for
 * the next call and ev0 destroyed. False, with "PHASES <what>: no records" on stderr, when
 * there are none. */
template <typename Records>
bool prof_collect(const Records &records, int words, int nctas, int max_ctas, cudaEvent_t ev0, cudaStream_t st,
                  const char *what, ProfCall *c) {
    const int n = nctas < max_ctas ? nctas : max_ctas;
    c->n = n;
    c->seen = 0;
    void *addr = nullptr;
    if (cudaGetSymbolAddress(&addr, records) != cudaSuccess) addr = nullptr;
    std::vector<unsigned long long> r;
    if (prof_read(addr, (size_t)n * words, ev0, st, r, &c->call_ms)) {
        std::vector<unsigned long long> g0(n), end(n), sm(n);
        c->sum.assign(words, 0.0);
        for (int i = 0; i < n; ++i) {
            const unsigned long long *x = &r[(size_t)i * words];
            g0[i] = x[PROF_G0];
            end[i] = x[PROF_END0] > x[PROF_END1] ? x[PROF_END0] : x[PROF_END1];
            sm[i] = x[PROF_SM];
            if (!g0[i] || !end[i]) continue;
            ++c->seen;
            for (int w = PROF_COUNTERS; w < words; ++w) c->sum[w] += (double)x[w];
        }
        if (c->seen > 0 && prof_sm_time(g0, end, sm, &c->t)) return true;
    }
    fprintf(stderr, "PHASES %s: no records\n", what);
    return false;
}

} // namespace uspk

#endif
