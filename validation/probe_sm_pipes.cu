// Per-SM throughput of the instructions an attention softmax issues, and the time one warpgroup takes for
// FlashAttention-3's softmax of a 64 x 128 score tile. Built and run by profile_sm_pipes.py; prints JSON lines.
//
// Throughput kernels: one CTA per SM, every thread keeps CHAINS independent registers and applies the
// instruction to each of them per iteration (inline PTX, so the compiler neither fuses nor removes it).
// Thread 0 reads clock64 after a __syncthreads at the start and at the end, so the rate is the CTA's
// instructions over its SM cycles. With 128 threads there is one warp per SM sub-partition (what one
// warpgroup has); with 1024, eight. (asm volatile keeps each instruction in the PTX; ptxas could still
// rewrite it, so the rates are checked against the pipe limits they should show.)
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

#define CHAINS 8
#define ITERS 4096

#define EX2(r) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(r))
#define FMA(r) asm volatile("fma.rn.f32 %0, %0, %1, %2;" : "+f"(r) : "f"(a), "f"(b))
#define FADD(r) asm volatile("add.f32 %0, %0, %1;" : "+f"(r) : "f"(a))
#define FMUL(r) asm volatile("mul.f32 %0, %0, %1;" : "+f"(r) : "f"(a))
#define FMAX(r) asm volatile("max.f32 %0, %0, %1;" : "+f"(r) : "f"(a))
#define CVT_BF16X2(r) asm volatile("{.reg .b32 t; cvt.rn.bf16x2.f32 t, %0, %1; mov.b32 %0, t;}" : "+f"(r) : "f"(a))
#define CVT_F16X2(r) asm volatile("{.reg .b32 t; cvt.rn.f16x2.f32 t, %0, %1; mov.b32 %0, t;}" : "+f"(r) : "f"(a))
#define SHFL(r) asm volatile("shfl.sync.bfly.b32 %0, %0, 1, 0x1f, 0xffffffff;" : "+f"(r))

#define ALL(OP) OP(x0); OP(x1); OP(x2); OP(x3); OP(x4); OP(x5); OP(x6); OP(x7)
#define HALF_A(OP) OP(x0); OP(x1); OP(x2); OP(x3)
#define HALF_B(OP) OP(x4); OP(x5); OP(x6); OP(x7)

enum Kind { K_EX2, K_FMA, K_FADD, K_FMUL, K_FMAX, K_CVT_BF16X2, K_CVT_F16X2, K_SHFL, K_EX2_FMA, K_EX2_CVT,
            K_FMAX_FMA, K_EX2_FMAX, K_COUNT };
static const char *NAMES[K_COUNT] = {"ex2", "fma", "fadd", "fmul", "fmax", "cvt_bf16x2", "cvt_f16x2", "shfl",
                                     "ex2+fma", "ex2+cvt_bf16x2", "fmax+fma", "ex2+fmax"};

template <int KIND>
__global__ void throughput(float seed, float a, float b, long long *cycles, float *sink) {
    float x0 = seed + threadIdx.x, x1 = x0 + 1, x2 = x0 + 2, x3 = x0 + 3, x4 = x0 + 4, x5 = x0 + 5, x6 = x0 + 6,
          x7 = x0 + 7;
    __syncthreads();
    long long t0 = clock64();
    for (int i = 0; i < ITERS; ++i) {
        if (KIND == K_EX2) { ALL(EX2); }
        if (KIND == K_FMA) { ALL(FMA); }
        if (KIND == K_FADD) { ALL(FADD); }
        if (KIND == K_FMUL) { ALL(FMUL); }
        if (KIND == K_FMAX) { ALL(FMAX); }
        if (KIND == K_CVT_BF16X2) { ALL(CVT_BF16X2); }
        if (KIND == K_CVT_F16X2) { ALL(CVT_F16X2); }
        if (KIND == K_SHFL) { ALL(SHFL); }
        if (KIND == K_EX2_FMA) { HALF_A(EX2); HALF_B(FMA); }
        if (KIND == K_EX2_CVT) { HALF_A(EX2); HALF_B(CVT_BF16X2); }
        if (KIND == K_FMAX_FMA) { HALF_A(FMAX); HALF_B(FMA); }
        if (KIND == K_EX2_FMAX) { HALF_A(EX2); HALF_B(FMAX); }
    }
    __syncthreads();
    long long t1 = clock64();
    if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
    sink[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}

// FlashAttention-3's online softmax of one warpgroup's 64 x 128 fp32 score tile, as its code does it per thread
// (wgmma's accumulator layout: 2 rows x 32 columns per thread, a row spread over the 4 threads of a quad):
// row max, quad all-reduce (2 shuffles), exp2(s * scale - max * scale), row sum, bf16 pack of P, and the
// rescale of the thread's share of the 64 x D fp32 accumulator, D / 4 registers per row (acc *=
// exp2((m_old - m_new) * scale)). The next tile is derived from P (64 LOP3 + 64 FADD per thread, work the
// kernel does not have) so that the loop carries a dependence. Cycles per iteration = one tile's softmax.
template <int D>
__global__ void fa3_softmax(float seed, float scale, int iters, long long *cycles, float *sink) {
    float s[2][32];
    float acc[2][D / 4];
    float m[2] = {-1e30f, -1e30f}, l[2] = {0.f, 0.f};
    uint32_t p[2][16];
    for (int r = 0; r < 2; ++r) {
        for (int c = 0; c < 32; ++c) s[r][c] = seed * (threadIdx.x + 3 * c + r);
        for (int c = 0; c < D / 4; ++c) acc[r][c] = c;
    }
    __syncthreads();
    long long t0 = clock64();
    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = m[r];
#pragma unroll
            for (int c = 0; c < 32; ++c) mx = fmaxf(mx, s[r][c]);
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
            float alpha = exp2f((m[r] - mx) * scale);
            float mscaled = mx * scale;
            float sum = 0.f;
#pragma unroll
            for (int c = 0; c < 32; ++c) {
                s[r][c] = exp2f(fmaf(s[r][c], scale, -mscaled));
                sum += s[r][c];
            }
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
#pragma unroll
            for (int c = 0; c < D / 4; ++c) acc[r][c] *= alpha;
#pragma unroll
            for (int c = 0; c < 16; ++c) {
                asm volatile("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(p[r][c]) : "f"(s[r][2 * c + 1]), "f"(s[r][2 * c]));
            }
        }
        // the next "score tile": derived from P so that the loop carries a dependence (stands in for S = Q K^T)
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int c = 0; c < 32; ++c) s[r][c] = __uint_as_float(p[r][c / 2] ^ 0x3f800000u) + (float)it;
    }
    __syncthreads();
    long long t1 = clock64();
    if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
    float out = l[0] + l[1];
    for (int c = 0; c < D / 4; ++c) out += acc[0][c] + acc[1][c];
    sink[blockIdx.x * blockDim.x + threadIdx.x] = out;
}

static double median_cycles(long long *d_cycles, int blocks) {
    std::vector<long long> h(blocks);
    cudaMemcpy(h.data(), d_cycles, blocks * sizeof(long long), cudaMemcpyDeviceToHost);
    std::sort(h.begin(), h.end());
    return (double)h[blocks / 2];
}

template <int KIND>
static void run_throughput(int sms, long long *d_cycles, float *d_sink) {
    const int thread_counts[2] = {128, 1024};
    for (int t : thread_counts) {
        throughput<KIND><<<sms, t>>>(0.001f, 1.0001f, 0.5f, d_cycles, d_sink);  // warm-up
        throughput<KIND><<<sms, t>>>(0.001f, 1.0001f, 0.5f, d_cycles, d_sink);
        cudaError_t err = cudaDeviceSynchronize();
        double cyc = median_cycles(d_cycles, sms);
        double per_sm = (double)t * ITERS * CHAINS / cyc;  // thread-instructions (lanes) per SM cycle
        printf("{\"probe\": \"throughput\", \"instruction\": \"%s\", \"threads_per_sm\": %d, \"cycles\": %.0f, "
               "\"lanes_per_clk_per_sm\": %.3f, \"error\": \"%s\"}\n",
               NAMES[KIND], t, cyc, per_sm, cudaGetErrorString(err));
    }
}

template <int D>
static void run_softmax(int sms, long long *d_cycles, float *d_sink) {
    const int iters = 2048;
    const int thread_counts[3] = {128, 256, 384};
    for (int t : thread_counts) {
        fa3_softmax<D><<<sms, t>>>(0.37f, 0.18f, iters, d_cycles, d_sink);
        fa3_softmax<D><<<sms, t>>>(0.37f, 0.18f, iters, d_cycles, d_sink);
        cudaError_t err = cudaDeviceSynchronize();
        double cyc = median_cycles(d_cycles, sms);
        printf("{\"probe\": \"fa3_softmax\", \"head_dim\": %d, \"warpgroups\": %d, \"cycles_per_tile\": %.1f, "
               "\"error\": \"%s\"}\n", D, t / 128, cyc / iters, cudaGetErrorString(err));
    }
}

int main() {
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    long long *d_cycles;
    float *d_sink;
    cudaMalloc(&d_cycles, sms * sizeof(long long));
    cudaMalloc(&d_sink, sms * 1024 * sizeof(float));
    run_throughput<K_EX2>(sms, d_cycles, d_sink);
    run_throughput<K_FMA>(sms, d_cycles, d_sink);
    run_throughput<K_FADD>(sms, d_cycles, d_sink);
    run_throughput<K_FMUL>(sms, d_cycles, d_sink);
    run_throughput<K_FMAX>(sms, d_cycles, d_sink);
    run_throughput<K_CVT_BF16X2>(sms, d_cycles, d_sink);
    run_throughput<K_CVT_F16X2>(sms, d_cycles, d_sink);
    run_throughput<K_SHFL>(sms, d_cycles, d_sink);
    run_throughput<K_EX2_FMA>(sms, d_cycles, d_sink);
    run_throughput<K_EX2_CVT>(sms, d_cycles, d_sink);
    run_throughput<K_FMAX_FMA>(sms, d_cycles, d_sink);
    run_throughput<K_EX2_FMAX>(sms, d_cycles, d_sink);
    run_softmax<64>(sms, d_cycles, d_sink);
    run_softmax<128>(sms, d_cycles, d_sink);
    return 0;
}
