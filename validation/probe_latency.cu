// Load-to-use latency of one thread's dependent loads (pointer chase), per level: L1 (ld.global.ca over 32 KiB),
// L2 (ld.global.cg: L2 only, over 1-32 MiB), HBM (ld.global.cg over 1 GiB, past L2). The chain visits 128-byte
// lines in a random cyclic order (one line per step), after untimed laps that bring the buffer into the level
// measured (4 for L1, 2 for L2, none for HBM, whose figure therefore includes TLB misses). One thread of one
// CTA (one SM); each step also pays the load's 64-bit address arithmetic. Built and run by probe_latency.py;
// prints JSON lines.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <random>
#include <algorithm>
#include <cuda_runtime.h>

#define LINE_WORDS 16  // 128 bytes of uint64

template <bool L2_ONLY>
__global__ void chase(const uint64_t *buf, uint64_t start, int warm_steps, int steps, long long *cycles,
                      uint64_t *sink) {
    uint64_t j = start;
    for (int i = 0; i < warm_steps; ++i) {
        if (L2_ONLY) asm volatile("ld.global.cg.u64 %0, [%1];" : "=l"(j) : "l"(buf + j));
        else asm volatile("ld.global.ca.u64 %0, [%1];" : "=l"(j) : "l"(buf + j));
    }
    long long t0 = clock64();
    for (int i = 0; i < steps; ++i) {
        if (L2_ONLY) asm volatile("ld.global.cg.u64 %0, [%1];" : "=l"(j) : "l"(buf + j));
        else asm volatile("ld.global.ca.u64 %0, [%1];" : "=l"(j) : "l"(buf + j));
    }
    long long t1 = clock64();
    *cycles = t1 - t0;
    *sink = j;
}

static void measure(const char *level, size_t bytes, bool l2_only, int warm_laps) {
    size_t lines = bytes / 128;
    std::vector<uint64_t> order(lines);
    for (size_t i = 0; i < lines; ++i) order[i] = i;
    std::mt19937_64 rng(12345);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<uint64_t> host(lines * LINE_WORDS, 0);
    for (size_t i = 0; i < lines; ++i) host[order[i] * LINE_WORDS] = order[(i + 1) % lines] * LINE_WORDS;
    uint64_t *buf;
    long long *d_cycles;
    uint64_t *d_sink;
    cudaMalloc(&buf, lines * 128);
    cudaMalloc(&d_cycles, sizeof(long long));
    cudaMalloc(&d_sink, sizeof(uint64_t));
    cudaMemcpy(buf, host.data(), lines * 128, cudaMemcpyHostToDevice);
    int steps = (int)std::min<size_t>(lines, 200000);
    int warm = (int)std::min<size_t>(lines * warm_laps, 2000000);
    if (l2_only) chase<true><<<1, 1>>>(buf, order[0] * LINE_WORDS, warm, steps, d_cycles, d_sink);
    else chase<false><<<1, 1>>>(buf, order[0] * LINE_WORDS, warm, steps, d_cycles, d_sink);
    cudaError_t err = cudaDeviceSynchronize();
    long long cycles = 0;
    cudaMemcpy(&cycles, d_cycles, sizeof(long long), cudaMemcpyDeviceToHost);
    printf("{\"probe\": \"latency\", \"level\": \"%s\", \"bytes\": %zu, \"steps\": %d, \"cycles_per_load\": %.1f, "
           "\"error\": \"%s\"}\n", level, bytes, steps, (double)cycles / steps, cudaGetErrorString(err));
    cudaFree(buf);
    cudaFree(d_cycles);
    cudaFree(d_sink);
}

int main() {
    measure("l1", 32 << 10, false, 4);
    for (size_t mib : {1, 4, 16, 32}) measure("l2", mib << 20, true, 2);
    measure("hbm", (size_t)1 << 30, true, 0);
    return 0;
}
