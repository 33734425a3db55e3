// Whether an L2 eviction-priority hint keeps a working set in the H200's L2 against streaming traffic (run 48).
// FlashAttention-3's Hopper kernels load K and V with an evict-last hint; the model's L2 has no priorities. A buffer A
// (a head's K/V) is read with an L2 policy (normal or evict_last, createpolicy + ld.global.L2::cache_hint), then a
// buffer B of STREAM bytes is read once (normal or evict_first: Q and O passing by), then A is read again with plain
// loads and timed with CUDA events. A pass over A that hits in L2 takes about half the time of one that misses, so
// the re-read's time between the two references (A alone: all hits; after a 256 MB memset: all misses) tells the
// share of A the L2 kept. Persisting lines are reset (cudaCtxResetPersistingL2Cache) before every case. Built and
// run by probe_l2_evict.py; prints one JSON line per case.
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

#define CTAS 528
#define THREADS 256
#define REPEATS 5

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

int main() {
    const size_t mb = 1u << 20;
    const size_t a_sizes_mb[] = {16, 24, 32};
    const size_t stream_mb[] = {0, 8, 16, 32, 64, 128};
    const int a_policies[] = {NORMAL, EVICT_LAST};
    const int b_policies[] = {NORMAL, EVICT_FIRST};
    const size_t flush_bytes = 256 * mb;
    uint4 *a, *b;
    char *flush;
    unsigned *sink;
    cudaMalloc(&a, 32 * mb);
    cudaMalloc(&b, 128 * mb);
    cudaMalloc(&flush, flush_bytes);
    cudaMalloc(&sink, sizeof(unsigned));
    cudaMemset(a, 1, 32 * mb);
    cudaMemset(b, 2, 128 * mb);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (size_t a_mb : a_sizes_mb) {
        size_t n_a = a_mb * mb / sizeof(uint4);
        for (int pa : a_policies) {
            for (int pb : b_policies) {
                for (size_t s_mb : stream_mb) {
                    if (s_mb == 0 && pb != NORMAL) continue;
                    std::vector<float> t, t_hit, t_miss;
                    for (int r = 0; r < REPEATS; ++r) {
                        // all misses: A evicted by a memset after the policy reset
                        cudaCtxResetPersistingL2Cache();
                        cudaMemset(flush, r & 0xff, flush_bytes);
                        t_miss.push_back(timed_reread(a, n_a, sink, e0, e1));
                        // all hits: A read twice in a row
                        read_plain<<<CTAS, THREADS>>>(a, n_a, sink);
                        t_hit.push_back(timed_reread(a, n_a, sink, e0, e1));
                        // the case: A with its policy, B streamed with its policy, A again
                        cudaCtxResetPersistingL2Cache();
                        cudaMemset(flush, r & 0xff, flush_bytes);
                        read_with_policy<<<CTAS, THREADS>>>(a, n_a, pa, sink);
                        if (s_mb) read_with_policy<<<CTAS, THREADS>>>(b, s_mb * mb / sizeof(uint4), pb, sink);
                        t.push_back(timed_reread(a, n_a, sink, e0, e1));
                    }
                    cudaError_t err = cudaDeviceSynchronize();
                    std::sort(t.begin(), t.end());
                    std::sort(t_hit.begin(), t_hit.end());
                    std::sort(t_miss.begin(), t_miss.end());
                    float mid = t[REPEATS / 2], hit = t_hit[REPEATS / 2], miss = t_miss[REPEATS / 2];
                    printf("{\"probe\": \"l2_evict\", \"a_mb\": %zu, \"a_policy\": %d, \"stream_mb\": %zu, "
                           "\"stream_policy\": %d, \"reread_ms\": %.5f, \"hit_ms\": %.5f, \"miss_ms\": %.5f, "
                           "\"kept\": %.3f, \"error\": \"%s\"}\n",
                           a_mb, pa, s_mb, pb, mid, hit, miss, (miss - mid) / (miss - hit), cudaGetErrorString(err));
                    fflush(stdout);
                }
            }
        }
    }
    return 0;
}
