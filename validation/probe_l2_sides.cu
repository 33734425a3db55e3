// Which of the L2's two partitions each SM sits beside. One SM (the toucher) reads a set of lines that fit in one
// partition, after a 256 MB memset has evicted them; then one thread on SM B times a load of each line
// (ld.global.cg: L2 only). An SM beside the toucher's partition finds every line near; an SM on the other side
// finds the lines homed in its own partition near and the rest in the far partition, slower. Each launch has many
// tiny CTAs so that every SM gets some; only the first CTA on the wanted SM works. Built and run by
// probe_l2_sides.py; prints one JSON line per (toucher, SM).
#include <cstdio>
#include <cstdint>
#include <vector>
#include <cuda_runtime.h>

#define LINES 1024
#define STRIDE_WORDS (33 * 16)  // 33 lines of 128 bytes apart: the set spreads over the L2's slices
#define CTAS 2112

__device__ __forceinline__ unsigned smid() {
    unsigned r;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
    return r;
}

__global__ void touch(const uint64_t *buf, unsigned target, int *claimed, uint64_t *sink) {
    if (smid() != target || threadIdx.x != 0 || atomicExch(claimed, 1)) return;
    uint64_t sum = 0;
    for (int i = 0; i < LINES; ++i) {
        uint64_t v;
        asm volatile("ld.global.cg.u64 %0, [%1];" : "=l"(v) : "l"(buf + (size_t)i * STRIDE_WORDS));
        sum += v;
    }
    *sink = sum;
}

__global__ void timed(const uint64_t *buf, unsigned target, int *claimed, unsigned *cycles, uint64_t *sink) {
    if (smid() != target || threadIdx.x != 0 || atomicExch(claimed, 1)) return;
    uint64_t sum = 0;
    for (int i = 0; i < LINES; ++i) {
        uint64_t v;
        long long t0 = clock64();
        asm volatile("ld.global.cg.u64 %0, [%1];" : "=l"(v) : "l"(buf + (size_t)i * STRIDE_WORDS + (sum & 1)));
        asm volatile("add.u64 %0, %0, %1;" : "+l"(sum) : "l"(v));  // waits for v: in-order issue
        long long t1 = clock64();
        cycles[i] = (unsigned)(t1 - t0);
    }
    *sink = sum;
}

int main() {
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    uint64_t *buf, *sink;
    char *flush;
    int *claimed;
    unsigned *d_cycles;
    const size_t flush_bytes = 256u << 20;
    cudaMalloc(&buf, (size_t)LINES * STRIDE_WORDS * 8);
    cudaMemset(buf, 0, (size_t)LINES * STRIDE_WORDS * 8);
    cudaMalloc(&flush, flush_bytes);
    cudaMalloc(&claimed, 2 * sizeof(int));
    cudaMalloc(&sink, sizeof(uint64_t));
    cudaMalloc(&d_cycles, LINES * sizeof(unsigned));
    std::vector<unsigned> cycles(LINES);
    const unsigned touchers[] = {0, (unsigned)sms / 2 + 1};
    for (unsigned toucher : touchers) {
        for (int sm = 0; sm < sms; ++sm) {
            cudaMemset(flush, sm & 0xff, flush_bytes);
            cudaMemset(claimed, 0, 2 * sizeof(int));
            touch<<<CTAS, 32>>>(buf, toucher, claimed, sink);
            timed<<<CTAS, 32>>>(buf, (unsigned)sm, claimed + 1, d_cycles, sink);
            cudaError_t err = cudaDeviceSynchronize();
            cudaMemcpy(cycles.data(), d_cycles, LINES * sizeof(unsigned), cudaMemcpyDeviceToHost);
            printf("{\"probe\": \"l2_sides\", \"toucher\": %u, \"sm\": %d, \"error\": \"%s\", \"cycles\": [", toucher, sm,
                   cudaGetErrorString(err));
            for (int i = 0; i < LINES; ++i) printf(i ? ",%u" : "%u", cycles[i]);
            printf("]}\n");
        }
    }
    return 0;
}
