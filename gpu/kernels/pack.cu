/* pack.cu: pack/unpack around the ulysses all-to-all (layouts in usp/gpu_pack.h).
 *
 * Even head splits (every rank H/U query heads) run the kernels they always
 * ran; uneven splits (usp/layout.h) run the ax_* kernels, whose index
 * arithmetic is a2a_index.h's (checked against core/a2a.c on the host by
 * tests/test_gpu_a2a_index.c; on a GPU by kernel-check's a2a.pack case).
 *
 * One thread per destination element; the source index is computed from the
 * destination's, so every kernel is a gather and no two threads write the
 * same element. Copies move raw elements of 2, 4 or 8 bytes, or convert
 * between fp32 and a 16-bit wire (round to nearest even, as the CPU
 * executors' emulation rounds); only the DKV unpack does arithmetic (the sum
 * of replicas, in fp32). Memory-bound and simple. */
#include <cuda_runtime.h>
#include "kernels.h"
#include "plugins/naive_kernels.cuh"
#include "usp/gpu_pack.h"
#include "a2a_index.h"

namespace {

struct Geom {
    int B, Ls, U, H, Hkv, D, Hu, Hkvu;
};

__host__ __device__ inline int kv_first(const Geom &g, int u) { return (int)((int64_t)u * g.Hkv / g.U); }

/* Heads per piece for the token-major patterns. */
__host__ __device__ inline int piece_heads(const Geom &g, usp_a2a a) {
    return (a == USP_A2A_KV || a == USP_A2A_DKV) ? g.Hkvu : g.Hu;
}

/* The source element of SEND element idx (piece-major). */
__device__ inline int64_t pack_source(usp_a2a a, const Geom &g, int64_t idx) {
    const int64_t Lr = (int64_t)g.U * g.Ls;
    if (a == USP_A2A_LSE) {   /* piece (B,Hu,Ls) from (B,Hu,Lr) */
        int64_t t = idx % g.Ls, r = idx / g.Ls;
        int64_t hh = r % g.Hu; r /= g.Hu;
        int64_t b = r % g.B, u = r / g.B;
        return (b * g.Hu + hh) * Lr + u * g.Ls + t;
    }
    int nh = piece_heads(g, a); /* piece (B,Ls,nh,D) */
    int64_t d = idx % g.D, r = idx / g.D;
    int64_t hh = r % nh; r /= nh;
    int64_t t = r % g.Ls; r /= g.Ls;
    int64_t b = r % g.B, u = r / g.B;
    if (a == USP_A2A_Q) return ((b * g.Ls + t) * g.H + u * g.Hu + hh) * g.D + d;
    if (a == USP_A2A_KV) return ((b * g.Ls + t) * g.Hkv + kv_first(g, (int)u) + hh) * g.D + d;
    return ((b * Lr + u * g.Ls + t) * nh + hh) * g.D + d; /* O, DKV: tokens [u*Ls, +Ls) of (B,Lr,nh,D) */
}

/* SEND element idx (piece-major) <- its source element. */
template <typename E>
__global__ void pack_kernel(usp_a2a a, Geom g, const E *src, E *send, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    send[idx] = src[pack_source(a, g, idx)];
}

/* The same, converting (fp32 <-> fp16/bf16, rounded to nearest even). */
__global__ void pack_convert_kernel(usp_a2a a, Geom g, usp_dtype sdt, const void *src, usp_dtype ddt, void *send,
                                    int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    naive::st(send, ddt, idx, naive::ld(src, sdt, pack_source(a, g, idx)));
}

/* The RECV element of dst element idx (Q, KV, O, LSE). */
__device__ inline int64_t unpack_source(usp_a2a a, const Geom &g, int64_t idx) {
    const int64_t Lr = (int64_t)g.U * g.Ls;
    if (a == USP_A2A_LSE) {   /* dst (B,H,Ls) */
        int64_t t = idx % g.Ls, r = idx / g.Ls;
        int64_t hd = r % g.H, b = r / g.H;
        int64_t u = hd / g.Hu, hh = hd % g.Hu;
        return ((u * g.B + b) * g.Hu + hh) * g.Ls + t;
    }
    if (a == USP_A2A_O) {     /* dst (B,Ls,H,D) */
        int64_t d = idx % g.D, r = idx / g.D;
        int64_t hd = r % g.H; r /= g.H;
        int64_t t = r % g.Ls, b = r / g.Ls;
        int64_t u = hd / g.Hu, hh = hd % g.Hu;
        return (((u * g.B + b) * g.Ls + t) * g.Hu + hh) * g.D + d;
    }
    int nh = piece_heads(g, a); /* Q, KV: dst (B,Lr,nh,D) */
    int64_t d = idx % g.D, r = idx / g.D;
    int64_t hh = r % nh; r /= nh;
    int64_t tt = r % Lr, b = r / Lr;
    int64_t u = tt / g.Ls, t = tt % g.Ls;
    return (((u * g.B + b) * g.Ls + t) * nh + hh) * g.D + d;
}

/* dst element idx <- RECV (Q, KV, O, LSE: a copy). */
template <typename E>
__global__ void unpack_kernel(usp_a2a a, Geom g, const E *recv, E *dst, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    dst[idx] = recv[unpack_source(a, g, idx)];
}

/* The same, converting (fp16/bf16 <-> fp32). */
__global__ void unpack_convert_kernel(usp_a2a a, Geom g, usp_dtype sdt, const void *recv, usp_dtype ddt, void *dst,
                                      int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    naive::st(dst, ddt, idx, naive::ld(recv, sdt, unpack_source(a, g, idx)));
}

/* DKV: dst (B,Ls,Hkv,D) = sum, in rank order, of the pieces holding the head.
 * Pieces of dtype rdt (fp64, fp32, or a 16-bit wire), dst of dtype ddt (fp64 with
 * fp64, else fp32 or 16-bit). */
__global__ void unpack_dkv_kernel(Geom g, usp_dtype rdt, const void *recv, usp_dtype ddt, void *dst, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    int64_t d = idx % g.D, r = idx / g.D;
    int kh = (int)(r % g.Hkv);
    r /= g.Hkv;
    int64_t t = r % g.Ls, b = r / g.Ls;
    double acc = 0.0;
    for (int u = 0; u < g.U; ++u) {
        int k0 = kv_first(g, u);
        if (kh < k0 || kh >= k0 + g.Hkvu) continue;
        int64_t s = (((u * (int64_t)g.B + b) * g.Ls + t) * g.Hkvu + (kh - k0)) * g.D + d;
        if (rdt == USP_F64)
            acc += static_cast<const double *>(recv)[s];
        else   /* fp32 sum for 32- and 16-bit data: the rounding the CPU executors use */
            acc = (float)acc + naive::ld(recv, rdt, s);
    }
    if (ddt == USP_F64)
        static_cast<double *>(dst)[idx] = acc;
    else
        naive::st(dst, ddt, idx, (float)acc);
}

/* ---------------------------------------------------------------- uneven splits */

static_assert(USP_AX_Q == (int)USP_A2A_Q && USP_AX_KV == (int)USP_A2A_KV && USP_AX_O == (int)USP_A2A_O &&
                  USP_AX_LSE == (int)USP_A2A_LSE && USP_AX_DKV == (int)USP_A2A_DKV,
              "a2a_index.h numbers the patterns as usp/schedule.h");

/* SEND element idx (pieces of per-peer sizes) <- its source element. */
template <typename E>
__global__ void ax_pack_kernel(usp_a2a a, usp_a2a_geom g, const E *src, E *send, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    send[idx] = src[usp_ax_pack_source(&g, a, idx)];
}

__global__ void ax_pack_convert_kernel(usp_a2a a, usp_a2a_geom g, usp_dtype sdt, const void *src, usp_dtype ddt,
                                       void *send, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    naive::st(send, ddt, idx, naive::ld(src, sdt, usp_ax_pack_source(&g, a, idx)));
}

template <typename E>
__global__ void ax_unpack_kernel(usp_a2a a, usp_a2a_geom g, const E *recv, E *dst, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    dst[idx] = recv[usp_ax_unpack_source(&g, a, idx)];
}

__global__ void ax_unpack_convert_kernel(usp_a2a a, usp_a2a_geom g, usp_dtype sdt, const void *recv, usp_dtype ddt,
                                         void *dst, int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    naive::st(dst, ddt, idx, naive::ld(recv, sdt, usp_ax_unpack_source(&g, a, idx)));
}

/* DKV: the sum, in rank order, of the pieces holding each K/V head, as unpack_dkv_kernel. */
__global__ void ax_unpack_dkv_kernel(usp_a2a_geom g, usp_dtype rdt, const void *recv, usp_dtype ddt, void *dst,
                                     int64_t n) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n) return;
    int64_t d = idx % g.D, r = idx / g.D;
    int kh = (int)(r % g.Hkv);
    r /= g.Hkv;
    int64_t t = r % g.Ls, b = r / g.Ls;
    double acc = 0.0;
    for (int u = 0; u < g.U; ++u) {
        int64_t s = usp_ax_dkv_source(&g, u, b, t, kh, d);
        if (s < 0) continue;
        if (rdt == USP_F64)
            acc += static_cast<const double *>(recv)[s];
        else
            acc = (float)acc + naive::ld(recv, rdt, s);
    }
    if (ddt == USP_F64)
        static_cast<double *>(dst)[idx] = acc;
    else
        naive::st(dst, ddt, idx, (float)acc);
}

usp_a2a_geom ax_geom_of(const usp_a2a_dims *d) {
    usp_a2a_geom g;
    g.B = d->batch; g.Ls = d->seq_shard; g.U = d->ulysses;
    g.H = d->heads; g.Hkv = d->kv_heads; g.D = d->head_dim;
    g.me = d->rank;
    return g;
}

/* The split of usp_heads_even: every rank the same query and K/V head counts. */
bool is_even(const usp_a2a_dims *d) {
    return d->heads % d->ulysses == 0 && (d->kv_heads % d->ulysses == 0 || d->ulysses % d->kv_heads == 0);
}

/* ---------------------------------------------------------------- both */

Geom geom_of(const usp_a2a_dims *d) {
    Geom g;
    g.B = d->batch; g.Ls = d->seq_shard; g.U = d->ulysses;
    g.H = d->heads; g.Hkv = d->kv_heads; g.D = d->head_dim;
    g.Hu = d->heads / d->ulysses;
    g.Hkvu = d->kv_heads >= d->ulysses ? d->kv_heads / d->ulysses : 1;
    return g;
}

usp_status check_geom(const usp_a2a_dims *d) {
    if (d->batch <= 0 || d->seq_shard <= 0 || d->ulysses <= 0 || d->heads <= 0 || d->kv_heads <= 0 ||
        d->head_dim <= 0)
        return usp_fail(USP_EINVAL, "a2a: sizes must be positive (B %d, Ls %d, U %d, H %d, Hkv %d, D %d)",
                        d->batch, d->seq_shard, d->ulysses, d->heads, d->kv_heads, d->head_dim);
    if (d->heads < d->ulysses)
        return usp_fail(USP_EINVAL, "a2a: heads %d < ulysses %d: a rank without a query head", d->heads, d->ulysses);
    if (d->heads % d->kv_heads != 0)
        return usp_fail(USP_EINVAL, "a2a: heads %d not divisible by kv heads %d", d->heads, d->kv_heads);
    if (d->rank < 0 || d->rank >= d->ulysses)
        return usp_fail(USP_EINVAL, "a2a: ulysses rank %d outside 0..%d", d->rank, d->ulysses - 1);
    return USP_OK;
}

long piece_elems(usp_a2a a, const Geom &g) {
    if (a == USP_A2A_LSE) return (long)g.B * g.Hu * g.Ls;
    if (a == USP_A2A_NONE) return 0;
    return (long)g.B * g.Ls * piece_heads(g, a) * g.D;
}

int64_t dst_elems(usp_a2a a, const Geom &g) {
    int64_t Lr = (int64_t)g.U * g.Ls;
    switch (a) {
    case USP_A2A_Q: return (int64_t)g.B * Lr * g.Hu * g.D;
    case USP_A2A_KV: return (int64_t)g.B * Lr * g.Hkvu * g.D;
    case USP_A2A_O: return (int64_t)g.B * g.Ls * g.H * g.D;
    case USP_A2A_LSE: return (int64_t)g.B * g.H * g.Ls;
    case USP_A2A_DKV: return (int64_t)g.B * g.Ls * g.Hkv * g.D;
    default: return 0;
    }
}

usp_status launched(const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return usp_fail(USP_EINTERNAL, "%s launch: %s", what, cudaGetErrorString(e));
    return USP_OK;
}

template <template <typename> class K, typename... Args>
usp_status by_size(size_t size, int64_t n, cudaStream_t st, Args... args) {
    unsigned blocks = (unsigned)((n + 255) / 256);
    if (size == 2) K<uint16_t>::go(blocks, st, args...);
    else if (size == 4) K<uint32_t>::go(blocks, st, args...);
    else K<uint64_t>::go(blocks, st, args...);
    return USP_OK;
}

template <typename E> struct PackGo {
    static void go(unsigned blocks, cudaStream_t st, usp_a2a a, Geom g, const void *src, void *dst, int64_t n) {
        pack_kernel<E><<<blocks, 256, 0, st>>>(a, g, static_cast<const E *>(src), static_cast<E *>(dst), n);
    }
};
template <typename E> struct UnpackGo {
    static void go(unsigned blocks, cudaStream_t st, usp_a2a a, Geom g, const void *src, void *dst, int64_t n) {
        unpack_kernel<E><<<blocks, 256, 0, st>>>(a, g, static_cast<const E *>(src), static_cast<E *>(dst), n);
    }
};
template <typename E> struct AxPackGo {
    static void go(unsigned blocks, cudaStream_t st, usp_a2a a, usp_a2a_geom g, const void *src, void *dst,
                   int64_t n) {
        ax_pack_kernel<E><<<blocks, 256, 0, st>>>(a, g, static_cast<const E *>(src), static_cast<E *>(dst), n);
    }
};
template <typename E> struct AxUnpackGo {
    static void go(unsigned blocks, cudaStream_t st, usp_a2a a, usp_a2a_geom g, const void *src, void *dst,
                   int64_t n) {
        ax_unpack_kernel<E><<<blocks, 256, 0, st>>>(a, g, static_cast<const E *>(src), static_cast<E *>(dst), n);
    }
};

/* Uneven splits: pack and unpack of rank d->rank. */
usp_status ax_pack(usp_a2a a, const usp_a2a_dims *d, usp_dtype src_dt, usp_dtype send_dt, const void *src,
                   void *send, cudaStream_t st) {
    usp_a2a_geom g = ax_geom_of(d);
    int64_t n = usp_ax_send_offset(&g, a, g.me, g.U);
    if (src_dt == send_dt)
        by_size<AxPackGo>(usp_dtype_size(src_dt), n, st, a, g, src, send, n);
    else
        ax_pack_convert_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(a, g, src_dt, src, send_dt, send, n);
    return launched("a2a pack (uneven heads)");
}

usp_status ax_unpack(usp_a2a a, const usp_a2a_dims *d, usp_dtype recv_dt, usp_dtype dst_dt, const void *recv,
                     void *dst, cudaStream_t st) {
    usp_a2a_geom g = ax_geom_of(d);
    int64_t n = usp_ax_dst_elems(&g, a);
    if (a == USP_A2A_DKV)
        ax_unpack_dkv_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(g, recv_dt, recv, dst_dt, dst, n);
    else if (recv_dt == dst_dt)
        by_size<AxUnpackGo>(usp_dtype_size(recv_dt), n, st, a, g, recv, dst, n);
    else
        ax_unpack_convert_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(a, g, recv_dt, recv, dst_dt, dst, n);
    return launched("a2a unpack (uneven heads)");
}

} // namespace

extern "C" usp_a2a_dims usp_a2a_dims_of(const usp_config *c) {
    usp_a2a_dims d;
    d.batch = c->batch;
    d.seq_shard = c->seq / (c->ulysses * c->ring);
    d.ulysses = c->ulysses;
    d.heads = c->heads;
    d.kv_heads = c->kv_heads;
    d.head_dim = c->head_dim;
    d.rank = 0;
    return d;
}

extern "C" usp_a2a_dims usp_a2a_dims_rank(const usp_config *c, int ulysses_rank) {
    usp_a2a_dims d = usp_a2a_dims_of(c);
    d.rank = ulysses_rank;
    return d;
}

extern "C" long usp_gpu_a2a_piece_elems(usp_a2a a, const usp_a2a_dims *d) {
    if (is_even(d)) return piece_elems(a, geom_of(d));
    usp_a2a_geom g = ax_geom_of(d);
    return a == USP_A2A_NONE ? 0 : (long)usp_ax_send_elems(&g, a, g.me, 0);
}

extern "C" long usp_gpu_a2a_send_elems(usp_a2a a, const usp_a2a_dims *d, int p) {
    usp_a2a_geom g = ax_geom_of(d);
    return a == USP_A2A_NONE ? 0 : (long)usp_ax_send_elems(&g, a, g.me, p);
}

extern "C" long usp_gpu_a2a_send_offset(usp_a2a a, const usp_a2a_dims *d, int p) {
    usp_a2a_geom g = ax_geom_of(d);
    return a == USP_A2A_NONE ? 0 : (long)usp_ax_send_offset(&g, a, g.me, p);
}

extern "C" long usp_gpu_a2a_recv_elems(usp_a2a a, const usp_a2a_dims *d, int p) {
    usp_a2a_geom g = ax_geom_of(d);
    return a == USP_A2A_NONE ? 0 : (long)usp_ax_recv_elems(&g, a, g.me, p);
}

extern "C" long usp_gpu_a2a_recv_offset(usp_a2a a, const usp_a2a_dims *d, int p) {
    usp_a2a_geom g = ax_geom_of(d);
    return a == USP_A2A_NONE ? 0 : (long)usp_ax_recv_offset(&g, a, g.me, p);
}

/* fp64 with fp64 only; the other dtypes convert among themselves. */
usp_status check_dtypes(const char *what, usp_dtype a, usp_dtype b) {
    if ((a == USP_F64) != (b == USP_F64))
        return usp_fail(USP_EINVAL, "%s: %s to %s is not a conversion it makes", what, usp_dtype_name(a),
                        usp_dtype_name(b));
    return USP_OK;
}

extern "C" usp_status usp_gpu_a2a_pack_to(usp_a2a a, const usp_a2a_dims *d, usp_dtype src_dt, usp_dtype send_dt,
                                          const void *src, void *send, void *stream) {
    USP_TRY(check_geom(d));
    if (a == USP_A2A_NONE) return usp_fail(USP_EINVAL, "pack: no a2a pattern");
    USP_TRY(check_dtypes("pack", src_dt, send_dt));
    if (!is_even(d)) return ax_pack(a, d, src_dt, send_dt, src, send, static_cast<cudaStream_t>(stream));
    Geom g = geom_of(d);
    int64_t n = (int64_t)piece_elems(a, g) * g.U;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (src_dt == send_dt) {
        by_size<PackGo>(usp_dtype_size(src_dt), n, st, a, g, src, send, n);
    } else {
        pack_convert_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(a, g, src_dt, src, send_dt, send, n);
    }
    return launched("a2a pack");
}

extern "C" usp_status usp_gpu_a2a_pack(usp_a2a a, const usp_a2a_dims *d, usp_dtype dt, const void *src,
                                       void *send, void *stream) {
    return usp_gpu_a2a_pack_to(a, d, dt, dt, src, send, stream);
}

extern "C" usp_status usp_gpu_a2a_unpack_from(usp_a2a a, const usp_a2a_dims *d, usp_dtype recv_dt, usp_dtype dst_dt,
                                              const void *recv, void *dst, void *stream) {
    USP_TRY(check_geom(d));
    if (a == USP_A2A_NONE) return usp_fail(USP_EINVAL, "unpack: no a2a pattern");
    USP_TRY(check_dtypes("unpack", recv_dt, dst_dt));
    if (!is_even(d)) return ax_unpack(a, d, recv_dt, dst_dt, recv, dst, static_cast<cudaStream_t>(stream));
    Geom g = geom_of(d);
    int64_t n = dst_elems(a, g);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (a == USP_A2A_DKV) {
        unpack_dkv_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(g, recv_dt, recv, dst_dt, dst, n);
        return launched("a2a unpack (dK/dV)");
    }
    if (recv_dt == dst_dt)
        by_size<UnpackGo>(usp_dtype_size(recv_dt), n, st, a, g, recv, dst, n);
    else
        unpack_convert_kernel<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(a, g, recv_dt, recv, dst_dt, dst, n);
    return launched("a2a unpack");
}

extern "C" usp_status usp_gpu_a2a_unpack(usp_a2a a, const usp_a2a_dims *d, usp_dtype dt, const void *recv,
                                         void *dst, void *stream) {
    return usp_gpu_a2a_unpack_from(a, d, dt, dt, recv, dst, stream);
}
