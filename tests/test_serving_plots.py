"""Serving figures draw from result objects; the block-size trade-off has its sweet spot at 16-32 tokens."""

import matplotlib.figure

from gpusim.plots.serving import allocation_figure, block_size_tradeoff_figure, kv_cache_figure, quantization_figure
from gpusim.problem import AttentionProblem
from gpusim.serving.allocator import TraceSpec, simulate_allocation
from gpusim.serving.kv_cache import dtype_table
from gpusim.serving.kv_quant import quantization_table
from gpusim.serving.paged_cost import block_size_tradeoff


def test_block_size_tradeoff_sweet_spot_and_figure():
    rows = block_size_tradeoff("llama3-8b", batch=1, kv_len=4096, trace=TraceSpec(requests=300, seed=0))
    by_size = {r.block_size: r for r in rows}
    # kernel: small pages are slow (each page-sized load pays the full memory latency with few bytes in
    # flight); from 32 tokens on the page walk is within 8% of contiguous until pages get too large for the
    # pipeline (256 drops to one stage)
    assert by_size[8].slowdown > by_size[16].slowdown > by_size[32].slowdown
    assert by_size[8].slowdown > 1.2 and max(by_size[s].slowdown for s in (32, 64)) < 1.08
    # waste: under 4% up to 32 tokens, over 10% at 128, so 32 is the sweet spot of the trade-off
    assert by_size[32].waste_fraction < 0.04 < by_size[64].waste_fraction and by_size[128].waste_fraction > 0.1
    assert isinstance(block_size_tradeoff_figure(rows), matplotlib.figure.Figure)


def test_other_figures():
    assert isinstance(allocation_figure(simulate_allocation(trace=TraceSpec(requests=100))), matplotlib.figure.Figure)
    assert isinstance(kv_cache_figure({m: dtype_table(m) for m in ("llama3-8b", "falcon-7b")}), matplotlib.figure.Figure)
    problem = AttentionProblem(batch=1, heads=4, kv_heads=1, seq_len=1, kv_len=64, head_dim=64)
    assert isinstance(quantization_figure(quantization_table(problem)), matplotlib.figure.Figure)
