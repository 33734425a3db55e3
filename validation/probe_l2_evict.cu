// Whether an L2 eviction-priority hint keeps a working set in the H200's L2 against streaming traffic (run 48).
// FlashAttention-3's Hopper kernels load K and V with an evict-last hint; the model's L2 has no priorities. A buffer A
// (a head's K/V) is read with an L2 policy (normal or evict_last, createpolicy + ld.global.L2::cache_hint), then a
// buffer B of STREAM MiB is read once (normal or evict_first: Q and O passing by), then A is read again with plain
// loads and timed with CUDA events. A pass over A that hits in L2 is faster than one that misses, so the re-read's
// time between the two references (A read twice in a row: all hits; A after a flush: all misses) tells the share of
// A the L2 kept. Every case and reference starts from a clean L2 that holds none of A: persisting lines reset
// (cudaCtxResetPersistingL2Cache), then a 256 MiB buffer read (reads, not a memset, so that no dirty lines are left
// to be written back during the timed pass). Each evict-last case runs with the persisting-L2 limit at its default
// and at the device's maximum (cudaLimitPersistingL2CacheSize), both recorded. Built and run by probe_l2_evict.py;
// prints one JSON line per case.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

#define CTAS 528
#define THREADS 256
#define REPEATS 9

enum Policy { NORMAL = 0, EVICT_LAST = 1, EVICT_FIRST = 2 };

__device__ __forceinline__ uint64_t make_policy(int policy) {
    uint64_t p = 0;
    if (policy == EVICT_LAST) {
        asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
    } else if (policy == EVICT_FIRST) {
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    } else {
        asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    }
    return p;
}

__global__ void read_with_policy(const uint4 *buf, size_t n, int policy, unsigned *sink) {
    uint64_t p = make_policy(policy);
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)THREADS + threadIdx.x; i < n; i += (size_t)CTAS * THREADS) {
        unsigned a, b, c, d;
        asm volatile("ld.global.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                     : "=r"(a), "=r"(b), "=r"(c), "=r"(d) : "l"(buf + i), "l"(p));
        acc ^= a ^ b ^ c ^ d;
    }
    if (acc == 0x12345678u) *sink = acc;
}

__global__ void read_plain(const uint4 *buf, size_t n, unsigned *sink) {
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)THREADS + threadIdx.x; i < n; i += (size_t)CTAS * THREADS) {
        uint4 v = buf[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) *sink = acc;
}

static float timed_reread(const uint4 *a, size_t n_a, unsigned *sink, cudaEvent_t e0, cudaEvent_t e1) {
    cudaEventRecord(e0);
    read_plain<<<CTAS, THREADS>>>(a, n_a, sink);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    return ms;
}

// A clean L2 that holds none of A: persisting lines back to normal, then a large buffer read through.
static void clean_l2(const uint4 *flush, size_t n_flush, unsigned *sink) {
    cudaCtxResetPersistingL2Cache();
    read_plain<<<CTAS, THREADS>>>(flush, n_flush, sink);
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main() {
    const size_t mib = 1u << 20;
    const size_t a_sizes_mib[] = {16, 24, 32};
    const size_t stream_mib[] = {0, 8, 16, 32, 64, 128};
    const int a_policies[] = {NORMAL, EVICT_LAST};
    const int b_policies[] = {NORMAL, EVICT_FIRST};
    const size_t flush_bytes = 256 * mib;
    uint4 *a, *b, *flush;
    unsigned *sink;
    cudaMalloc(&a, 32 * mib);
    cudaMalloc(&b, 128 * mib);
    cudaMalloc(&flush, flush_bytes);
    cudaMalloc(&sink, sizeof(unsigned));
    cudaMemset(a, 1, 32 * mib);
    cudaMemset(b, 2, 128 * mib);
    cudaMemset(flush, 3, flush_bytes);
    const size_t n_flush = flush_bytes / sizeof(uint4);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    size_t default_limit = 0;
    cudaDeviceGetLimit(&default_limit, cudaLimitPersistingL2CacheSize);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    const size_t max_limit = prop.persistingL2CacheMaxSize;
    printf("{\"probe\": \"l2_evict_device\", \"l2_bytes\": %d, \"persisting_limit_default\": %zu, "
           "\"persisting_limit_max\": %zu}\n", prop.l2CacheSize, default_limit, max_limit);
    for (size_t a_mib : a_sizes_mib) {
        size_t n_a = a_mib * mib / sizeof(uint4);
        for (int pa : a_policies) {
            for (int limit_max = 0; limit_max <= (pa == EVICT_LAST ? 1 : 0); ++limit_max) {
                size_t limit = limit_max ? max_limit : default_limit;
                cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, limit);
                size_t limit_set = 0;
                cudaDeviceGetLimit(&limit_set, cudaLimitPersistingL2CacheSize);
                for (int pb : b_policies) {
                    for (size_t s_mib : stream_mib) {
                        if (s_mib == 0 && pb != NORMAL) continue;
                        std::vector<float> t, t_hit, t_miss;
                        for (int r = 0; r < REPEATS; ++r) {
                            clean_l2(flush, n_flush, sink);  // all misses
                            t_miss.push_back(timed_reread(a, n_a, sink, e0, e1));
                            read_plain<<<CTAS, THREADS>>>(a, n_a, sink);  // all hits: A read twice in a row
                            t_hit.push_back(timed_reread(a, n_a, sink, e0, e1));
                            clean_l2(flush, n_flush, sink);  // the case
                            read_with_policy<<<CTAS, THREADS>>>(a, n_a, pa, sink);
                            if (s_mib) read_with_policy<<<CTAS, THREADS>>>(b, s_mib * mib / sizeof(uint4), pb, sink);
                            t.push_back(timed_reread(a, n_a, sink, e0, e1));
                        }
                        cudaError_t err = cudaDeviceSynchronize();
                        float mid = median(t), hit = median(t_hit), miss = median(t_miss);
                        std::sort(t.begin(), t.end());
                        printf("{\"probe\": \"l2_evict\", \"a_mib\": %zu, \"a_policy\": %d, \"stream_mib\": %zu, "
                               "\"stream_policy\": %d, \"persisting_limit\": %zu, \"reread_ms\": %.5f, "
                               "\"reread_ms_min\": %.5f, \"reread_ms_max\": %.5f, \"hit_ms\": %.5f, "
                               "\"miss_ms\": %.5f, \"kept\": %.3f, \"error\": \"%s\"}\n",
                               a_mib, pa, s_mib, pb, limit_set, mid, t.front(), t.back(), hit, miss,
                               (miss - mid) / (miss - hit), cudaGetErrorString(err));
                        fflush(stdout);
                    }
                }
            }
        }
    }
    return 0;
}
