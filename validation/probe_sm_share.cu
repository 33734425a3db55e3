// How one SM's load bandwidth from DRAM grows with the CTAs it holds (issue #8: a tail wave that doubles up on
// SMs; run 13 saw two register-loading CTAs on one SM read 1.69 times what one reads). Built and run by
// probe_sm_share.py; prints JSON lines.
//
// Every SM gets `occupancy` CTAs (grid = SMs x occupancy, the dynamic SMEM sized so that exactly that many fit).
// The CTAs on SM `target` take slots in arrival order (an atomic counter); the first `active` of them stream
// their own region of a buffer, every other CTA exits at once. A CTA streams `rounds` rounds of `bytes` each:
//   mode 0, cp.async: 16-byte cp.async.cg into a ring of `stages` SMEM buffers, waiting for the oldest round
//           only (cp.async.wait_group stages-1), as FA2's and Triton's pipelined loops do;
//   mode 1, register loads: 16-byte ld.global.cg, 8 independent loads per thread before their use (`bytes` a
//           multiple of 128 x threads).
// Timed with CUDA events around one launch after a 256 MiB memset flushed the L2, median of 11; a round's time
// is (t(R2 rounds) - t(R1 rounds)) / (R2 - R1), and the SM's rate is active x bytes over it.
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <vector>

__device__ __forceinline__ unsigned sm_id() {
    unsigned r;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
    return r;
}

__global__ void stream(const int4* __restrict__ src, int* counter, int* sink, int target, int active, int rounds,
                       int vecs, int stages, int mode, long long cta_vecs) {
    extern __shared__ int4 smem[];
    __shared__ int slot;
    if (threadIdx.x == 0) slot = sm_id() == (unsigned)target ? atomicAdd(counter, 1) : -1;
    __syncthreads();
    if (slot < 0 || slot >= active) return;
    const int4* base = src + slot * cta_vecs;
    int acc = 0;
    if (mode == 0) {
        for (int r = 0; r < rounds; ++r) {
            int4* buf = smem + (r % stages) * vecs;
            const int4* p = base + (long long)r * vecs;
            for (int i = threadIdx.x; i < vecs; i += blockDim.x) {
                unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(&buf[i]));
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(p + i));
            }
            asm volatile("cp.async.commit_group;\n" ::);
            if (r >= stages - 1) {  // the round issued stages-1 rounds ago has landed
                if (stages == 3) asm volatile("cp.async.wait_group 2;\n" ::);
                else if (stages == 2) asm volatile("cp.async.wait_group 1;\n" ::);
                else asm volatile("cp.async.wait_group 0;\n" ::);
                __syncthreads();
                acc += smem[((r - stages + 1) % stages) * vecs + threadIdx.x].x;
            }
        }
        asm volatile("cp.async.wait_group 0;\n" ::);
        __syncthreads();
    } else {
        for (int r = 0; r < rounds; ++r) {
            const int4* p = base + (long long)r * vecs;
            for (int i = threadIdx.x; i < vecs; i += 8 * blockDim.x) {
                int4 v[8];
#pragma unroll
                for (int u = 0; u < 8; ++u) v[u] = __ldcg(p + i + u * blockDim.x);
#pragma unroll
                for (int u = 0; u < 8; ++u) acc += v[u].x ^ v[u].w;
            }
        }
    }
    if (acc == 0x7fffffff) sink[slot] = acc;
}

struct Case {
    const char* mode_name;
    int mode, threads, bytes, stages, occupancy, active;
};

int main() {
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    cudaFuncSetAttribute(stream, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);
    const int R1 = 4, R2 = 36;
    std::vector<Case> cases;
    // cp.async, 128 threads: 2 x 32 KiB (Triton's split-K tiles hold K and V of 16 KiB each, two rounds ahead)
    for (int a = 1; a <= 3; ++a) cases.push_back({"cp_async", 0, 128, 32768, 2, 3, a});
    // cp.async, 128 threads, 3 x 16 KiB: up to 4 per SM
    for (int a = 1; a <= 4; ++a) cases.push_back({"cp_async", 0, 128, 16384, 3, 4, a});
    // cp.async, 256 threads: does a CTA's rate grow with its warps?
    for (int a = 1; a <= 3; ++a) cases.push_back({"cp_async", 0, 256, 32768, 2, 3, a});
    // register loads, 256 and 1024 threads
    for (int a = 1; a <= 4; ++a) cases.push_back({"ld_global", 1, 256, 32768, 1, 4, a});
    for (int a = 1; a <= 2; ++a) cases.push_back({"ld_global", 1, 1024, 131072, 1, 2, a});

    char* flush = nullptr;
    cudaMalloc(&flush, 256 << 20);
    int *counter = nullptr, *sink = nullptr;
    cudaMalloc(&counter, sizeof(int));
    cudaMalloc(&sink, 64 * sizeof(int));
    const long long max_cta_bytes = (long long)R2 * 131072;
    int4* src = nullptr;
    cudaMalloc(&src, 4 * max_cta_bytes);
    cudaMemset(src, 1, 4 * max_cta_bytes);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (const Case& c : cases) {
        // SMEM per CTA so that exactly `occupancy` CTAs fit on an SM (228 KiB per SM, 1 KiB reserved per CTA)
        int smem = 228 * 1024 / c.occupancy - 1024 - 64;
        smem = std::max(smem, c.mode == 0 ? c.bytes * c.stages : 0);
        int fit = 0;
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, stream, c.threads, smem);
        int target = 5;
        double us[2];
        int seen = 0;
        for (int k = 0; k < 2; ++k) {
            int rounds = k == 0 ? R1 : R2;
            std::vector<float> t;
            for (int rep = 0; rep < 12; ++rep) {
                cudaMemset(flush, rep, 256 << 20);
                cudaMemset(counter, 0, sizeof(int));
                cudaEventRecord(e0);
                stream<<<sms * c.occupancy, c.threads, smem>>>(src, counter, sink, target, c.active, rounds,
                                                               c.bytes / 16, c.stages, c.mode,
                                                               max_cta_bytes / 16);
                cudaEventRecord(e1);
                cudaEventSynchronize(e1);
                float ms = 0;
                cudaEventElapsedTime(&ms, e0, e1);
                if (rep > 0) t.push_back(ms * 1000.f);
            }
            cudaMemcpy(&seen, counter, sizeof(int), cudaMemcpyDeviceToHost);
            std::sort(t.begin(), t.end());
            us[k] = t[t.size() / 2];
        }
        double per_round = (us[1] - us[0]) / (R2 - R1);
        double sm_gbps = c.active * (double)c.bytes / per_round / 1e3;
        printf("{\"mode\": \"%s\", \"threads\": %d, \"bytes_per_round\": %d, \"stages\": %d, \"occupancy\": %d, "
               "\"fits\": %d, \"ctas_on_target_sm\": %d, \"active\": %d, \"us_%d_rounds\": %.3f, "
               "\"us_%d_rounds\": %.3f, \"us_per_round\": %.4f, \"sm_GBps\": %.2f, \"cta_GBps\": %.2f, "
               "\"error\": \"%s\"}\n",
               c.mode_name, c.threads, c.bytes, c.stages, c.occupancy, fit, seen, c.active, R1, us[0], R2, us[1],
               per_round, sm_gbps, sm_gbps / c.active, cudaGetErrorString(cudaGetLastError()));
        fflush(stdout);
    }
    return 0;
}
