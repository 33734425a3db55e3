"""PagedAttention: the paged decode kernel computes attention through a shuffled block table, reads the table
and whole pages, and the allocator wastes < 4% with paging against > 50% with max-length reservation."""

import numpy as np
import pytest

from gpusim.errors import InputError
from gpusim.problem import AttentionProblem
from gpusim.reference import attention_forward, random_inputs, relative_error
from gpusim.simulate import run_functional_check, simulate
from gpusim.kernels.paged_decoding import build_plan, make_block_table, paged_inputs
from gpusim.hardware import get_preset
from gpusim.serving.allocator import TraceSpec, block_size_sweep, simulate_allocation

BF16_TOL = 2e-2  # bf16 K/V/P through fp32 accumulation, against float64


def _problem(batch=2, heads=8, kv_heads=2, kv_len=200, head_dim=64):
    return AttentionProblem(batch=batch, heads=heads, kv_heads=kv_heads, seq_len=1, kv_len=kv_len, head_dim=head_dim)


@pytest.mark.parametrize("opts", [
    dict(block_size=16, page_table_seed=7),
    dict(block_size=8, page_table_seed=3, num_splits=3),
    dict(block_size=256, page_table_seed=5),
    dict(block_size=128, block_n=32, page_table_seed=2, num_splits=2),
    dict(block_size=32, tile="page", page_table_seed=9),
    dict(paged=False, num_splits=2),
])
def test_paged_decode_matches_float64_reference(opts):
    problem = _problem()
    x = random_inputs(problem, seed=0)
    o_ref, lse_ref = attention_forward(x["Q"], x["K"], x["V"])
    out = run_functional_check("paged_decoding", problem, "h200", paged_inputs(problem, x, opts), opts)
    assert relative_error(out["O"], o_ref) < BF16_TOL
    assert np.allclose(out["LSE"], lse_ref, atol=1e-2)


def test_paged_decode_uses_the_table():
    """K/V scattered with one table, kernel built with another: the output is wrong."""
    problem = _problem()
    x = random_inputs(problem, seed=0)
    o_ref, _ = attention_forward(x["Q"], x["K"], x["V"])
    inputs = paged_inputs(problem, x, dict(page_table_seed=3))
    out = run_functional_check("paged_decoding", problem, "h200", inputs, dict(page_table_seed=4))
    assert relative_error(out["O"], o_ref) > 0.5


def test_block_table_is_a_permutation():
    table = make_block_table(3, 5, seed=11)
    assert sorted(table.ravel().tolist()) == list(range(15))
    assert make_block_table(2, 3, seed=0).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_paged_reads_table_and_whole_last_page():
    """kv_len 200 in pages of 64: 4 pages, the last holds 8 tokens but is read whole (256 tokens of K and V);
    contiguous reads exactly 200; the table adds 4 bytes per page per KV head CTA."""
    problem = _problem(batch=1, heads=4, kv_heads=1, kv_len=200, head_dim=64)
    hw = get_preset("h200")
    paged = simulate("paged_decoding", problem, hw, dict(block_size=64, num_splits=1), exact=True)
    contiguous = simulate("paged_decoding", problem, hw, dict(paged=False, num_splits=1), exact=True)
    q_bytes = 4 * 64 * 2
    assert contiguous.l2_read_bytes == q_bytes + 2 * 200 * 64 * 2
    assert paged.l2_read_bytes == q_bytes + 2 * 256 * 64 * 2 + 4 * 4
    assert paged.info["block_table_bytes"] == 16


def test_page_tiles_slow_down_at_small_pages():
    """One page per tile (vLLM's loop): 8-token pages leave too few bytes in flight per CTA at batch 1."""
    problem = AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=4096, head_dim=128)
    base = simulate("paged_decoding", problem, "h200", dict(paged=False)).time_s
    small = simulate("paged_decoding", problem, "h200", dict(block_size=8, tile="page", page_table_seed=1)).time_s
    mid = simulate("paged_decoding", problem, "h200", dict(block_size=32, tile="page", page_table_seed=1)).time_s
    assert small / base > 1.2
    assert mid / base < 1.1


@pytest.mark.parametrize("problem,opts", [
    (AttentionProblem(batch=1, heads=4, seq_len=2, head_dim=64), {}),
    (_problem(), dict(block_size=12)),
    (_problem(), dict(paged=False, tile="page")),
    (_problem(), dict(kv_group=32)),
    (AttentionProblem(batch=1, heads=4, seq_len=1, kv_len=64, head_dim=64, dtype="fp8"), {}),
])
def test_bad_input_is_input_error(problem, opts):
    with pytest.raises(InputError):
        build_plan(problem, get_preset("h200"), opts)


def test_allocator_paging_wastes_under_4_percent_contiguous_over_half():
    result = simulate_allocation("llama3-8b", trace=TraceSpec(requests=500, seed=1), block_size=16,
                                 budget_bytes=40 * 2**30)
    assert result.paged.waste_fraction < 0.04
    assert result.contiguous.waste_fraction > 0.5
    assert result.paged.used_bytes_per_request == result.contiguous.used_bytes_per_request
    assert result.paged.max_batch > 2 * result.contiguous.max_batch
    # contiguous: 2048 tokens x 131072 bytes reserved per request; 40 GiB / 256 MiB = 160 requests
    assert result.contiguous.reserved_bytes_per_request == 2048 * 131072
    assert result.contiguous.max_batch == 160
    parts = result.contiguous.breakdown
    assert parts["future_tokens"] + parts["never_used"] == pytest.approx(result.contiguous.wasted_bytes_per_request)


def test_allocator_waste_grows_with_block_size_and_is_half_a_page():
    rows = block_size_sweep("llama3-8b", trace=TraceSpec(requests=300, seed=2))
    waste = [r.paged.waste_fraction for r in rows]
    assert waste == sorted(waste)
    # mean last-page waste is close to (block_size - 1) / 2 tokens
    for r in rows[:3]:
        tokens = r.paged.breakdown["last_page"] / r.bytes_per_token
        assert abs(tokens - (r.block_size - 1) / 2) < 0.15 * r.block_size


def test_trace_means_follow_the_stated_distribution():
    prompt, output = TraceSpec(requests=20000, max_seq_len=100000, seed=3).lengths()
    assert prompt.mean() == pytest.approx(161.31, rel=0.05)
    assert output.mean() == pytest.approx(337.99, rel=0.05)
