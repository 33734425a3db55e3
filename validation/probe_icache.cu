// Instruction fetch on an H200 SM: cycles per instruction of straight-line code as its size grows past the
// instruction caches, when every warp runs the same code, and when two warpgroups of a CTA run two different
// bodies of that size (as FA2's masked and unmasked tile paths do in co-resident CTAs). Built and run by
// probe_icache.py; prints JSON lines.
//
// A body is KB kibibytes of independent FFMAs (64 per KiB: a SASS instruction is 16 bytes) over 8 registers,
// unrolled; the loop around it is not. One CTA per SM; thread 0 reads clock64 around the loop.
#include <cstdio>
#include <cuda_runtime.h>
#include <vector>
#include <algorithm>

#define FFMA(r, IMM) asm volatile("fma.rn.f32 %0, %0, %1, " IMM ";" : "+f"(r) : "f"(a))
#define KIB_OF(IMM) \
    _Pragma("unroll") for (int q = 0; q < 8; ++q) { \
        FFMA(x0, IMM); FFMA(x1, IMM); FFMA(x2, IMM); FFMA(x3, IMM); \
        FFMA(x4, IMM); FFMA(x5, IMM); FFMA(x6, IMM); FFMA(x7, IMM); }

template <int KB, int BODY>
__device__ __forceinline__ void body(float &x0, float &x1, float &x2, float &x3, float &x4, float &x5, float &x6,
                                     float &x7, float a) {
#pragma unroll
    for (int k = 0; k < KB; ++k) {
        if (BODY == 0) { KIB_OF("0f3F800000"); }
        else { KIB_OF("0f3F000000"); }
    }
}

// two_bodies: even warpgroups run body 0, odd ones body 1 (different code of the same size)
template <int KB, bool TWO_BODIES>
__global__ void fetch(float a, int reps, long long *cycles, float *sink) {
    float x0 = threadIdx.x, x1 = x0 + 1, x2 = x0 + 2, x3 = x0 + 3, x4 = x0 + 4, x5 = x0 + 5, x6 = x0 + 6,
          x7 = x0 + 7;
    bool second = TWO_BODIES && (threadIdx.x / 128) % 2 == 1;
    __syncthreads();
    long long t0 = clock64();
#pragma unroll 1
    for (int r = 0; r < reps; ++r) {
        if (second) body<KB, 1>(x0, x1, x2, x3, x4, x5, x6, x7, a);
        else body<KB, 0>(x0, x1, x2, x3, x4, x5, x6, x7, a);
    }
    __syncthreads();
    long long t1 = clock64();
    if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
    sink[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}

// One warpgroup loops over a KL KiB body while the other streams through a KS KiB body (KS > KL, each pass a
// long run of straight-line code, as a CTA's prologue and first tiles are to a co-resident CTA in its loop):
// does the stream evict the loop? Each warpgroup stamps its own cycles; both issue about the same instructions.
template <int KL, int KS>
__global__ void loop_and_stream(float a, int reps, long long *cycles, float *sink) {
    float x0 = threadIdx.x, x1 = x0 + 1, x2 = x0 + 2, x3 = x0 + 3, x4 = x0 + 4, x5 = x0 + 5, x6 = x0 + 6,
          x7 = x0 + 7;
    const int wg = threadIdx.x / 128;
    __syncthreads();
    long long t0 = clock64();
    if (wg == 0) {
#pragma unroll 1
        for (int r = 0; r < reps; ++r) body<KL, 0>(x0, x1, x2, x3, x4, x5, x6, x7, a);
    } else {
#pragma unroll 1
        for (int r = 0; r < reps * KL / KS; ++r) body<KS, 1>(x0, x1, x2, x3, x4, x5, x6, x7, a);
    }
    long long t1 = clock64();
    if (threadIdx.x % 128 == 0) cycles[2 * blockIdx.x + wg] = t1 - t0;
    sink[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}

template <int KL, int KS>
static void run_loop_and_stream(int sms, long long *d_cycles, float *d_sink) {
    int reps = 4096 / KL;
    loop_and_stream<KL, KS><<<sms, 256>>>(1.0f, reps, d_cycles, d_sink);
    loop_and_stream<KL, KS><<<sms, 256>>>(1.0f, reps, d_cycles, d_sink);
    cudaError_t err = cudaDeviceSynchronize();
    std::vector<long long> h(2 * sms), loop(sms), stream(sms);
    cudaMemcpy(h.data(), d_cycles, 2 * sms * sizeof(long long), cudaMemcpyDeviceToHost);
    for (int i = 0; i < sms; ++i) { loop[i] = h[2 * i]; stream[i] = h[2 * i + 1]; }
    std::sort(loop.begin(), loop.end());
    std::sort(stream.begin(), stream.end());
    double instr = (double)reps * KL * 64;  // warp instructions each warp of either warpgroup issues
    printf("{\"probe\": \"loop_and_stream\", \"loop_kib\": %d, \"stream_kib\": %d, \"threads\": 256, "
           "\"loop_cycles_per_warp_instruction\": %.3f, \"stream_cycles_per_warp_instruction\": %.3f, "
           "\"error\": \"%s\"}\n", KL, KS, (double)loop[sms / 2] / instr, (double)stream[sms / 2] / instr,
           cudaGetErrorString(err));
}

template <int KB, bool TWO>
static void run(int sms, long long *d_cycles, float *d_sink) {
    const int thread_counts[2] = {256, 512};  // 2 or 4 warpgroups: 2 or 4 warps per sub-partition
    for (int t : thread_counts) {
        int reps = std::max(8, 4096 / KB);
        fetch<KB, TWO><<<sms, t>>>(1.0f, reps, d_cycles, d_sink);
        fetch<KB, TWO><<<sms, t>>>(1.0f, reps, d_cycles, d_sink);
        cudaError_t err = cudaDeviceSynchronize();
        std::vector<long long> h(sms);
        cudaMemcpy(h.data(), d_cycles, sms * sizeof(long long), cudaMemcpyDeviceToHost);
        std::sort(h.begin(), h.end());
        double instr_per_warp = (double)reps * KB * 64;  // warp instructions each warp issues
        double warps_per_smsp = t / 32 / 4;
        printf("{\"probe\": \"icache\", \"body_kib\": %d, \"two_bodies\": %s, \"threads\": %d, "
               "\"cycles_per_warp_instruction_per_smsp\": %.3f, \"error\": \"%s\"}\n",
               KB, TWO ? "true" : "false", t, (double)h[sms / 2] / (instr_per_warp * warps_per_smsp),
               cudaGetErrorString(err));
    }
}

int main() {
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    long long *d_cycles;
    float *d_sink;
    cudaMalloc(&d_cycles, 2 * sms * sizeof(long long));
    cudaMalloc(&d_sink, sms * 1024 * sizeof(float));
    run<2, false>(sms, d_cycles, d_sink);   run<2, true>(sms, d_cycles, d_sink);
    run<8, false>(sms, d_cycles, d_sink);   run<8, true>(sms, d_cycles, d_sink);
    run<16, false>(sms, d_cycles, d_sink);  run<16, true>(sms, d_cycles, d_sink);
    run<20, true>(sms, d_cycles, d_sink);   run<24, true>(sms, d_cycles, d_sink);   // where between 32 and 64 KiB
    run<28, true>(sms, d_cycles, d_sink);                                           // of two bodies the knee is
    run<32, false>(sms, d_cycles, d_sink);  run<32, true>(sms, d_cycles, d_sink);
    run<64, false>(sms, d_cycles, d_sink);  run<64, true>(sms, d_cycles, d_sink);
    run<128, false>(sms, d_cycles, d_sink); run<128, true>(sms, d_cycles, d_sink);
    run_loop_and_stream<16, 16>(sms, d_cycles, d_sink);  // two loops that fit together: the reference
    run_loop_and_stream<8, 64>(sms, d_cycles, d_sink);   run_loop_and_stream<16, 64>(sms, d_cycles, d_sink);
    run_loop_and_stream<24, 48>(sms, d_cycles, d_sink);  run_loop_and_stream<24, 96>(sms, d_cycles, d_sink);
    run_loop_and_stream<16, 128>(sms, d_cycles, d_sink);
    return 0;
}
