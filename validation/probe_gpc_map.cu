// Which SMs share a GPC, and how fast each SM streams from HBM when all SMs do (issue #8: run 13 saw 24 SMs
// finish a memory-bound wave 5-7% early, the same 24 in two launches). Built and run by probe_gpc_map.py.
//
// Membership: the CTAs of a thread-block cluster run in one GPC, so every cluster of 16 or 8 CTAs (one per SM: each
// takes most of the SM's shared memory) names SMs of one GPC; the clusters over many launches join into GPCs.
// (Clusters of two only pair the two SMs of a TPC.) Speed: two CTAs of 1024 threads per SM, as in run 13, each
// stream their own 8 MiB (all SMs busy: HBM is shared) and stamp %globaltimer at their start and end.
// Prints one JSON line per launch and one with cudaOccupancyMaxActiveClusters per cluster size.
#include <cstdio>
#include <cuda_runtime.h>
#include <vector>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
    printf("{\"error\": \"%s\", \"at\": \"%s\"}\n", cudaGetErrorString(e), #x); return 1; } } while (0)

constexpr int kThreads = 512;
constexpr size_t kSmemBytes = 150 * 1024;  // one CTA per SM

__global__ void stream_slices(const float4* __restrict__ buf, size_t per_cta, unsigned* smid_out,
                              unsigned* cluster_out, unsigned long long* start_out,
                              unsigned long long* end_out, float* sink) {
    extern __shared__ float scratch[];
    unsigned smid, cluster;
    unsigned long long start, end;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(cluster));
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    const float4* p = buf + blockIdx.x * per_cta;
    float acc = 0.f;
    for (size_t i = threadIdx.x; i < per_cta; i += blockDim.x) {
        float4 v = p[i];
        acc += v.x + v.y + v.z + v.w;
    }
    scratch[threadIdx.x] = acc;
    __syncthreads();
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(end));
    if (threadIdx.x == 0) {
        smid_out[blockIdx.x] = smid;
        cluster_out[blockIdx.x] = cluster;
        start_out[blockIdx.x] = start;
        end_out[blockIdx.x] = end;
        if (scratch[0] == 1234.5f) sink[blockIdx.x] = scratch[1];  // keep the reads
    }
}

int main() {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    CHECK(cudaFuncSetAttribute(stream_slices, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes));
    CHECK(cudaFuncSetAttribute(stream_slices, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    for (int size = 1; size <= 16; size *= 2) {
        cudaLaunchConfig_t config = {};
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = size;
        attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
        config.gridDim = dim3(size * 64);
        config.blockDim = dim3(kThreads);
        config.dynamicSmemBytes = kSmemBytes;
        config.attrs = attr;
        config.numAttrs = 1;
        int clusters = -1;
        cudaError_t e = cudaOccupancyMaxActiveClusters(&clusters, stream_slices, &config);
        printf("{\"cluster_size\": %d, \"max_active_clusters\": %d, \"status\": \"%s\"}\n", size, clusters,
               cudaGetErrorString(e));
    }
    const size_t per_cta = (size_t)8 << 20 >> 4;  // float4s: 8 MiB per CTA
    const int max_ctas = 2 * sms;
    float4* buf;
    float* sink;
    unsigned *smid, *cluster;
    unsigned long long *start, *end;
    CHECK(cudaMalloc(&buf, per_cta * max_ctas * sizeof(float4)));
    CHECK(cudaMemset(buf, 0, per_cta * max_ctas * sizeof(float4)));
    CHECK(cudaMalloc(&sink, max_ctas * sizeof(float)));
    CHECK(cudaMalloc(&smid, max_ctas * sizeof(unsigned)));
    CHECK(cudaMalloc(&cluster, max_ctas * sizeof(unsigned)));
    CHECK(cudaMalloc(&start, max_ctas * sizeof(unsigned long long)));
    CHECK(cudaMalloc(&end, max_ctas * sizeof(unsigned long long)));
    std::vector<unsigned> h_smid(max_ctas), h_cluster(max_ctas);
    std::vector<unsigned long long> h_start(max_ctas), h_end(max_ctas);
    // (phase, cluster size, CTAs, threads, shared memory, launches): membership from clusters of 16 and 8 (one CTA
    // per SM); speed from two CTAs of 1024 threads per SM, as run 13 ran them
    struct Phase { const char* name; int cluster, ctas, threads; size_t smem; int launches; };
    const Phase phases[] = {{"membership", 16, 7 * 16, kThreads, kSmemBytes, 12},
                            {"membership", 8, 15 * 8, kThreads, kSmemBytes, 12},
                            {"speed", 1, 2 * sms, 1024, 100 * 1024, 4}};
    for (const Phase& ph : phases) {
        for (int launch = 0; launch < ph.launches; ++launch) {
            cudaLaunchConfig_t config = {};
            cudaLaunchAttribute attr[1];
            attr[0].id = cudaLaunchAttributeClusterDimension;
            attr[0].val.clusterDim.x = ph.cluster;
            attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
            config.gridDim = dim3(ph.ctas);
            config.blockDim = dim3(ph.threads);
            config.dynamicSmemBytes = ph.smem;
            config.attrs = attr;
            config.numAttrs = 1;
            CHECK(cudaLaunchKernelEx(&config, stream_slices, (const float4*)buf, per_cta, smid, cluster, start,
                                     end, sink));
            CHECK(cudaDeviceSynchronize());
            const int n = ph.ctas;
            CHECK(cudaMemcpy(h_smid.data(), smid, n * sizeof(unsigned), cudaMemcpyDeviceToHost));
            CHECK(cudaMemcpy(h_cluster.data(), cluster, n * sizeof(unsigned), cudaMemcpyDeviceToHost));
            CHECK(cudaMemcpy(h_start.data(), start, n * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
            CHECK(cudaMemcpy(h_end.data(), end, n * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
            unsigned long long first = h_start[0];
            for (int i = 0; i < n; ++i) first = h_start[i] < first ? h_start[i] : first;
            printf("{\"phase\": \"%s\", \"launch\": %d, \"cluster_size\": %d, \"threads\": %d, \"ctas\": [",
                   ph.name, launch, ph.cluster, ph.threads);
            for (int i = 0; i < n; ++i)
                printf("%s[%u, %u, %llu, %llu]", i ? ", " : "", h_smid[i], h_cluster[i], h_start[i] - first,
                       h_end[i] - first);
            printf("]}\n");
        }
    }
    return 0;
}
