"""The serving layer: decisions a serving system makes on top of the attention kernels.

models      published attention shapes of open models (layers, query heads, KV heads, head dim)
kv_cache    KV-cache bytes per token, per layer and per batch, for bf16/fp16, fp8, int8 and int4 with scales
allocator   a request trace served with contiguous max-length reservation against paging (PagedAttention)
paged_cost  the block-size trade-off: paged decode kernel time vs contiguous, and allocator waste
kv_quant    KV-cache quantization (fp8 e4m3/e5m2, int8, int4; per-channel or per-block scales) and its error
serving_sim request-level serving on simpy: continuous batching with and without chunked prefill, step times
            from the kernel simulator (cached per shape); TTFT, TPOT, ITL, throughput, per-step latency
offload     long context beyond GPU memory: KV pages offloaded over PCIe against H2O heavy-hitter eviction
            (time, and the output error eviction causes)
tensor_parallel  a TP degree splitting query and KV heads: per-GPU KV bytes and attention time, replication
studies     one function per study (paging, kv_quant, chunked_prefill, kv_memory, offload, tp) returning its
            summary, tables and figures; the CLI commands and `[serving]` scenarios both call them
scenario    `[serving]` scenario files: loading (every key checked) and running one study
cli         the `gpusim kv-cache`, `paging`, `kv-quant`, `serve`, `offload` and `tp` subcommands (`add_parsers`)

Everything here returns result objects; only the CLI and the scenario runner print or write files.
"""
