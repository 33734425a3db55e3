"""FlashAttention-3 (Hopper) and FlashAttention-4 (Blackwell) kernels: functional correctness against the
float64 reference, FP8 scaling, and the direction of each mechanism's effect on simulated time.

Tolerances: bf16 tensors (and bf16 P in the P V product) give relative errors around 4e-3; the test bound is
2e-2. FP8 (e4m3, 3 mantissa bits, P rounded to e4m3 too) gives about 5e-2 on random data; the bound is 0.1.
"""

from __future__ import annotations

import pytest

from gpusim.engine import loop_sampling
from gpusim.engine.timing import TimingInterpreter
from gpusim.errors import InputError
from gpusim.kernels import fa3, fa4
from gpusim.kernels.cudnn_options import CUDNN_BPROP_TILES
from gpusim.problem import AttentionProblem
from gpusim.reference import attention_backward, attention_forward, random_inputs, relative_error
from gpusim.simulate import run_functional_check, simulate

BF16_TOL = 2e-2
LSE_TOL = 1e-3
FP8_TOL = 0.1


def _forward_errors(kernel, problem, hardware, options=None, seed=0):
    x = random_inputs(problem, seed)
    out = run_functional_check(kernel, problem, hardware, x, options)
    o, lse = attention_forward(x["Q"], x["K"], x["V"], problem.causal)
    return relative_error(out["O"], o), relative_error(out["LSE"], lse)


FWD_SHAPES = [
    dict(seq_len=97),
    dict(seq_len=257),
    dict(seq_len=97, causal=True),
    dict(seq_len=257, causal=True),
    dict(seq_len=65, kv_len=200, causal=True),  # bottom-right causal with a longer KV
]


# ------------------------------------------------------------------------------------------------ FA3 forward
@pytest.mark.parametrize("shape", FWD_SHAPES)
def test_fa3_forward_bf16(shape):
    problem = AttentionProblem(batch=1, heads=2, head_dim=64, **shape)
    err_o, err_lse = _forward_errors("fa3", problem, "h200")
    assert err_o < BF16_TOL and err_lse < LSE_TOL


@pytest.mark.parametrize("kv_heads", [8, 1])
def test_fa3_forward_gqa_and_mqa(kv_heads):
    problem = AttentionProblem(batch=1, heads=32, kv_heads=kv_heads, seq_len=33, head_dim=64, causal=True)
    err_o, err_lse = _forward_errors("fa3", problem, "h200")
    assert err_o < BF16_TOL and err_lse < LSE_TOL


@pytest.mark.parametrize("options", [
    {"warp_specialization": False}, {"pingpong": False}, {"intra_wg_pipeline": False},
    {"pingpong": False, "intra_wg_pipeline": False}, {"block_m": 192, "stages": 3},
])
def test_fa3_schedule_variants_compute_the_same(options):
    """Every schedule variant is the same algorithm: its result agrees with the reference (and so with the
    default schedule) on a causal, ragged, two-head-dim case."""
    for d in (64, 128):
        problem = AttentionProblem(batch=1, heads=2, seq_len=200, head_dim=d, causal=True)
        err_o, err_lse = _forward_errors("fa3", problem, "h200", options)
        assert err_o < BF16_TOL and err_lse < LSE_TOL


def test_fa3_head_dim_256():
    problem = AttentionProblem(batch=1, heads=1, seq_len=100, head_dim=256, causal=True)
    assert _forward_errors("fa3", problem, "h200")[0] < BF16_TOL


# ------------------------------------------------------------------------------------------------ FA3 backward
#: cuDNN's backward (validation/README.md runs 39-40): two 64-key consumer warpgroups per CTA, 64 query rows per
#: step, and its extra instructions
CUDNN_BWD = CUDNN_BPROP_TILES


@pytest.mark.parametrize("shape, options", [
    (dict(seq_len=97), None), (dict(seq_len=150, causal=True), None),
    (dict(seq_len=97, heads=4, kv_heads=1, causal=True), None),
    (dict(seq_len=70, kv_len=200, heads=4, kv_heads=2, causal=True), None), (dict(seq_len=97, head_dim=128), None),
    (dict(seq_len=150, causal=True), CUDNN_BWD), (dict(seq_len=97, heads=4, kv_heads=2, head_dim=128), CUDNN_BWD),
    # one consumer warpgroup; three, whose dQ columns (64 / 3) split unevenly, over a ragged last CTA
    (dict(seq_len=150, causal=True), {"bwd_block_m": 64, "bwd_block_n": 64}),
    (dict(seq_len=97, kv_len=250, causal=True), {"bwd_block_m": 64, "bwd_block_n": 192}),
])
def test_fa3_backward(shape, options):
    """pass_='bwd' reads O and LSE (from the reference forward) and dO; dQ, dK, dV match the float64
    reference, with the release's tiles, cuDNN's, and one or three consumer warpgroups."""
    spec = dict(batch=1, heads=2, head_dim=64, pass_="bwd")
    spec.update(shape)
    problem = AttentionProblem(**spec)
    x = random_inputs(problem, 1, with_grad=True)
    x["O"], x["LSE"] = attention_forward(x["Q"], x["K"], x["V"], problem.causal)
    out = run_functional_check("fa3", problem, "h200", x, options)
    dq, dk, dv = attention_backward(x["Q"], x["K"], x["V"], x["dO"], problem.causal)
    for name, ref in (("dQ", dq), ("dK", dk), ("dV", dv)):
        assert relative_error(out[name], ref) < BF16_TOL, name


def test_fa3_forward_backward():
    problem = AttentionProblem(batch=1, heads=2, seq_len=130, head_dim=64, causal=True, pass_="fwd_bwd")
    x = random_inputs(problem, 2, with_grad=True)
    out = run_functional_check("fa3", problem, "h200", x)
    o, _ = attention_forward(x["Q"], x["K"], x["V"], True)
    dq, dk, dv = attention_backward(x["Q"], x["K"], x["V"], x["dO"], True)
    assert relative_error(out["O"], o) < BF16_TOL
    for name, ref in (("dQ", dq), ("dK", dk), ("dV", dv)):
        assert relative_error(out[name], ref) < BF16_TOL, name
    launches = [launch.name for launch in fa3.build_plan(problem, _hw("h200")).launches]
    assert launches == ["fa3_fwd", "fa3_bwd_preprocess", "fa3_bwd", "fa3_bwd_postprocess"]


# ------------------------------------------------------------------------------------------------ FA3 fp8
def _fp8_error(problem, x, mode):
    options = {"fp8_scaling": mode}
    out = run_functional_check("fa3", problem, "h200", fa3.quantize_inputs(problem, x, "h200", options), options)
    o, _ = attention_forward(x["Q"], x["K"], x["V"], problem.causal)
    return relative_error(out["O"], o)


@pytest.mark.parametrize("mode", ["block", "tensor"])
def test_fa3_fp8_forward_error(mode):
    problem = AttentionProblem(batch=1, heads=2, seq_len=200, head_dim=64, causal=True, dtype="fp8")
    assert _fp8_error(problem, random_inputs(problem, 0), mode) < FP8_TOL


def test_fa3_fp8_block_scaling_beats_tensor_scaling_with_outliers():
    """One query token with a massive activation (5e4 in one channel) sets the per-tensor scale so high that
    typical entries of every other Q tile fall into e4m3's subnormal range; block scaling confines the damage
    to the tile that holds the outlier. (The outlier's key is made unambiguous so that the outlier row's
    one-hot attention does not depend on rounding.)"""
    problem = AttentionProblem(batch=1, heads=2, seq_len=400, head_dim=64, dtype="fp8")
    for seed in range(2):
        x = random_inputs(problem, seed)
        x["Q"][0, 0, 300, 7] = 5e4
        x["K"][0, 0, 123, 7] = 6.0
        block, tensor = _fp8_error(problem, x, "block"), _fp8_error(problem, x, "tensor")
        assert block < tensor < FP8_TOL
        assert block < 0.9 * tensor


def test_fa3_fp8_incoherent_processing_is_exact_rotation():
    problem = AttentionProblem(batch=1, heads=1, seq_len=64, head_dim=64, dtype="fp8")
    x = random_inputs(problem, 0)
    options = {"incoherent_processing": True}
    q = fa3.quantize_inputs(problem, x, "h200", options)
    out = run_functional_check("fa3", problem, "h200", q, options)
    o, _ = attention_forward(x["Q"], x["K"], x["V"])
    assert relative_error(out["O"], o) < FP8_TOL


def test_fa3_fp8_runs_at_the_fp8_rate():
    bf16 = AttentionProblem(batch=1, heads=16, seq_len=2048, head_dim=256)
    fp8 = AttentionProblem(batch=1, heads=16, seq_len=2048, head_dim=256, dtype="fp8")
    assert simulate("fa3", fp8, "h100").tflops_per_s > 1.5 * simulate("fa3", bf16, "h100").tflops_per_s


# ------------------------------------------------------------------------------------------------ errors
def _hw(name):
    from gpusim.hardware import get_preset
    return get_preset(name)


def test_fa3_rejects_gpus_without_wgmma():
    problem = AttentionProblem(batch=1, heads=1, seq_len=64, head_dim=64)
    with pytest.raises(InputError, match="wgmma"):
        fa3.build_plan(problem, _hw("a100"))


def test_fa3_rejects_bad_block_m():
    problem = AttentionProblem(batch=1, heads=1, seq_len=64, head_dim=64)
    with pytest.raises(InputError, match="multiple of 64"):
        fa3.build_plan(problem, _hw("h200"), {"block_m": 96})


def test_fa3_extra_softmax_instructions_cost_time_not_results():
    """An implementation's extra softmax instructions (cuDNN's, run 20) lengthen the consumers' softmax: the FP32
    work grows by exactly the extra lane operations, the output does not change, and negative counts are refused."""
    problem = AttentionProblem(batch=1, heads=4, seq_len=1024, head_dim=64)
    extra = {"extra_softmax_ops_per_score": 2.0, "extra_softmax_ops_per_acc": 1.0}
    base, more = (TimingInterpreter(_hw("h200"), exact=True).run(
        fa3.build_plan(problem, _hw("h200"), {"block_m": 128, "block_n": 128, **x})) for x in ({}, extra))
    scores = problem.batch * problem.heads * problem.seq_len * problem.kv_len
    accumulators = problem.batch * problem.heads * problem.seq_len * problem.head_dim * (problem.kv_len // 128)
    assert more["counters"].fp32_ops - base["counters"].fp32_ops == pytest.approx(2.0 * scores + accumulators)
    assert more["cycles"] > base["cycles"]
    errors = _forward_errors("fa3", AttentionProblem(batch=1, heads=2, seq_len=97, head_dim=64), "h200", extra)
    assert max(errors) < BF16_TOL
    with pytest.raises(InputError, match="extra_softmax_ops_per_acc=-1.0 must not be negative"):
        fa3.build_plan(problem, _hw("h200"), {"extra_softmax_ops_per_acc": -1.0})


def test_fa3_extra_backward_instructions_cost_time_not_results():
    """cuDNN's backward instructions beyond its arithmetic (run 40) grow the FP32 work by exactly the extra lane
    operations per score element and per dQ element, and lengthen the step; negative counts are refused."""
    problem = AttentionProblem(batch=1, heads=2, seq_len=512, head_dim=64, pass_="bwd")
    tiles = {"bwd_block_m": 64, "bwd_block_n": 128}
    extra = {"extra_bwd_ops_per_score": 3.0, "extra_bwd_ops_per_dq": 2.0}
    base, more = (TimingInterpreter(_hw("h200"), exact=True).run(fa3.build_plan(problem, _hw("h200"), {**tiles, **x}))
                  for x in ({}, extra))
    scores = problem.batch * problem.heads * problem.seq_len * problem.kv_len
    dq_elements = problem.batch * problem.heads * problem.seq_len * problem.head_dim * (problem.kv_len // 128)
    assert more["counters"].fp32_ops - base["counters"].fp32_ops == pytest.approx(3.0 * scores + 2.0 * dq_elements)
    assert more["cycles"] > base["cycles"]
    small = AttentionProblem(batch=1, heads=2, seq_len=97, head_dim=64, pass_="bwd")
    x = random_inputs(small, 3, with_grad=True)
    x["O"], x["LSE"] = attention_forward(x["Q"], x["K"], x["V"], small.causal)
    plain, extra_out = (run_functional_check("fa3", small, "h200", dict(x), {**tiles, **e}) for e in ({}, extra))
    for name in ("dQ", "dK", "dV"):
        assert (plain[name] == extra_out[name]).all(), name
    with pytest.raises(InputError, match="extra_bwd_ops_per_dq=-1.0 must not be negative"):
        fa3.build_plan(problem, _hw("h200"), {"extra_bwd_ops_per_dq": -1.0})


def test_fa3_backward_warpgroups_stay_in_step_across_waves():
    """cuDNN-shaped backward CTAs (two consumer warpgroups held together by the named barrier before dV) run every
    wave at the first wave's pace, so folding, which starts fewer SMs' CTAs at other times, agrees with exact mode.
    With the barrier after dV (or none), the second wave's warpgroups drift half a step apart and overlap: folded
    mode comes out 7-10% off exact at this shape (two waves of 64-step CTAs)."""
    problem = AttentionProblem(batch=1, heads=8, seq_len=4096, head_dim=64, pass_="bwd")
    folded, exact = (simulate("fa3", problem, "h200", CUDNN_BWD, exact=e) for e in (False, True))
    main = [next(launch.time_s for launch in r.launches if launch.name == "fa3_bwd") for r in (folded, exact)]
    assert main[0] == pytest.approx(main[1], rel=0.02)


def test_fa3_backward_tiles_are_options():
    problem = AttentionProblem(batch=1, heads=1, seq_len=256, head_dim=64, pass_="bwd")
    plan = fa3.build_plan(problem, _hw("h200"), CUDNN_BWD)
    assert (plan.info["bwd_block_m"], plan.info["bwd_block_n"]) == (64, 128)
    assert len(plan.launches[1].grid) == 256 // 128
    with pytest.raises(InputError, match="bwd_block_n=96 must be a multiple of 64"):
        fa3.build_plan(problem, _hw("h200"), {"bwd_block_n": 96})


def test_fa4_rejects_gpus_without_tcgen05():
    problem = AttentionProblem(batch=1, heads=1, seq_len=64, head_dim=64)
    with pytest.raises(InputError, match="tcgen05"):
        fa4.build_plan(problem, _hw("h200"))


def test_fa4_is_forward_only():
    problem = AttentionProblem(batch=1, heads=1, seq_len=64, head_dim=64, pass_="bwd")
    with pytest.raises(InputError, match="forward"):
        fa4.build_plan(problem, _hw("b200"))


# ------------------------------------------------------------------------------------------------ FA4 forward
@pytest.mark.parametrize("shape", FWD_SHAPES + [dict(seq_len=97, heads=4, kv_heads=1, causal=True),
                                                dict(seq_len=130, heads=4, kv_heads=2, causal=True),
                                                dict(seq_len=97, head_dim=256)])
def test_fa4_forward(shape):
    spec = dict(batch=1, heads=2, head_dim=64)
    spec.update(shape)
    problem = AttentionProblem(**spec)
    err_o, err_lse = _forward_errors("fa4", problem, "b200")
    assert err_o < BF16_TOL and err_lse < LSE_TOL


def test_fa4_mechanisms_off_compute_the_same():
    problem = AttentionProblem(batch=1, heads=4, kv_heads=2, seq_len=300, head_dim=128, causal=True)
    off = {"two_cta": False, "exp_on_fma_fraction": 0.0, "rescale_threshold": 0.0, "lpt_schedule": False}
    err_o, err_lse = _forward_errors("fa4", problem, "b200", off)
    assert err_o < BF16_TOL and err_lse < LSE_TOL


def test_fa4_rescale_schedule():
    charged = [fa4.rescale_charged(i, 8.0) for i in range(101)]
    assert not charged[0] and sum(charged) == 10  # 10% of the 100 tiles after the first (RESCALED_TILE_FRACTION)
    assert sum(fa4.rescale_charged(i, 0.0) for i in range(101)) == 100  # every tile after the first


def test_fa4_lpt_grid_is_a_permutation_longest_first():
    problem = AttentionProblem(batch=2, heads=4, kv_heads=2, seq_len=1024, head_dim=128, causal=True)
    grid = fa4.lpt_grid(problem, 4)
    plain = [(mb, b, h) for h in range(4) for b in range(2) for mb in range(4)]
    assert sorted(grid) == sorted(plain)
    assert all(cta[0] == 3 for cta in grid[:8])  # all heads fit one L2 section: the last Q tiles go first


def test_fa4_tmem_budget_limits_q_tiles():
    """S and O of two 128-row Q tiles fill the 256 KB of TMEM at d = 128; d = 256 leaves room for one."""
    def q_stages(d):
        return fa4.build_plan(AttentionProblem(batch=1, heads=1, seq_len=512, head_dim=d), _hw("b200")).info["q_stages"]
    assert q_stages(128) == 2 and q_stages(256) == 1


# ------------------------------------------------------------------------------------------------ timing
#: FA3 paper Table 2 setting (batch 4, 16 heads, d 128, non-causal), and the same at a quarter of its 8448
#: tokens (the ordering must hold at both; each point simulates in well under a second).
TABLE2_SMALL = AttentionProblem(batch=4, heads=16, seq_len=2112, head_dim=128)
TABLE2 = AttentionProblem(batch=4, heads=16, seq_len=8448, head_dim=128)


def test_fa3_sampled_walk_agrees_with_the_full_walk(monkeypatch):
    """Folded mode samples each CTA's K/V walk (70 tiles here; the producer's and both consumers' loops
    together) and reads the skipped tiles' data as shared stand-in chunks: time and DRAM reads stay with
    the walk run in full, at a fraction of the events."""
    problem = AttentionProblem(batch=1, heads=8, seq_len=12320, head_dim=128)
    sampled = simulate("fa3", problem, "h200")
    monkeypatch.setattr(loop_sampling, "SAMPLE_ABOVE", 10**9)
    full = simulate("fa3", problem, "h200")
    assert sampled.time_s == pytest.approx(full.time_s, rel=0.02)
    assert sampled.hbm_read_bytes == pytest.approx(full.hbm_read_bytes, rel=0.05)
    assert sampled.flops == pytest.approx(full.flops, rel=1e-6)
    assert sampled.events < full.events / 2


def _ablation(problem):
    return {name: simulate("fa3", problem, "h100", options).time_s for name, options in (
        ("fa3", {}), ("no_intra_wg", {"intra_wg_pipeline": False}), ("no_ws", {"warp_specialization": False}),
        ("no_pingpong_no_intra_wg", {"pingpong": False, "intra_wg_pipeline": False}))}


def _assert_table2_order(t):
    assert t["fa3"] < t["no_intra_wg"] and t["fa3"] < t["no_ws"]  # 661 > 582, 570 TFLOPs/s in the paper
    # ping-pong: 570 -> 620-640 TFLOPs/s (paper Sec. 3.1, which comes before the intra-warpgroup overlap of
    # Sec. 3.2; with that overlap on, the model's lockstep warpgroups hide the softmax behind P V without it)
    assert t["no_intra_wg"] < t["no_pingpong_no_intra_wg"]


def test_fa3_ablation_order_table2_shape():
    _assert_table2_order(_ablation(TABLE2_SMALL))


def test_fa3_ablation_order_table2():
    _assert_table2_order(_ablation(TABLE2))


def test_fa3_no_warp_specialization_slower_than_no_intra_wg_pipelining():
    """Table 2's order: 661 > 582 (no intra-warpgroup pipelining) > 570 (no warp specialization)."""
    t = _ablation(TABLE2)
    assert t["fa3"] < t["no_intra_wg"] < t["no_ws"]


def test_fa3_without_warp_specialization_shares_kv_tiles():
    """Without a producer the consumer warpgroups still read K and V from one SMEM ring: the same L2 and
    SMEM traffic as FA3, and the same SMEM budget."""
    ws, no_ws = (simulate("fa3", TABLE2_SMALL, "h100", {"warp_specialization": on}) for on in (True, False))
    assert no_ws.l2_read_bytes == ws.l2_read_bytes
    assert no_ws.smem_write_bytes == ws.smem_write_bytes
    plans = [fa3.build_plan(TABLE2_SMALL, _hw("h100"), {"warp_specialization": on}) for on in (True, False)]
    assert plans[0].launches[0].smem_bytes_per_cta == plans[1].launches[0].smem_bytes_per_cta


def test_fa3_inline_loads_cost_only_with_staggered_warpgroups():
    """The in-line loader (warpgroup 0) refills a slot once every consumer has released it. With one consumer
    warpgroup (block_m 64) it never waits for another warpgroup and no-WS is as fast as FA3 (within 3%);
    with two ping-ponged warpgroups it waits a GEMM turn for the other's release every tile."""
    def tflops(block_m, ws):
        r = simulate("fa3", TABLE2_SMALL, "h100", {"block_m": block_m, "warp_specialization": ws})
        return r.flops / r.time_s
    assert tflops(64, False) == pytest.approx(tflops(64, True), rel=0.03)
    assert tflops(128, False) < 0.9 * tflops(128, True)


def test_fa3_faster_than_fa2_on_h200():
    problem = AttentionProblem(batch=8, heads=16, seq_len=2048, head_dim=128)
    assert simulate("fa3", problem, "h200").time_s < simulate("fa2", problem, "h200").time_s


def test_fa3_exp_share_at_head_dim_128():
    """FA3 Sec. 3: at d = 128 the exponentials take about half the matmul cycles (at peak rates; the tensor
    core sustains less than peak here, so a little less)."""
    r = simulate("fa3", TABLE2_SMALL, "h100")
    ratio = r.unit_busy["mufu"] / r.unit_busy["tensor"]
    assert 0.3 < ratio < 0.6
    assert r.bound == "compute"


FA4_PROBLEM = AttentionProblem(batch=4, heads=16, seq_len=4096, head_dim=128)
#: Causal CTAs differ in work, so folding merges few of them; a short causal problem keeps the exact
#: simulation fast (256 CTAs, about 1.7 waves on 148 SMs, where the order of unequal CTAs matters most).
FA4_CAUSAL = AttentionProblem(batch=4, heads=16, seq_len=1024, head_dim=128, causal=True)


@pytest.mark.parametrize("problem, option, off, strictly", [
    (FA4_PROBLEM, "exp_on_fma_fraction", 0.0, True),  # the MUFU is the softmax warpgroups' bottleneck
    (FA4_PROBLEM, "rescale_threshold", 0.0, False),  # less FP32 work for the correction warpgroup
    (FA4_PROBLEM, "two_cta", False, False),  # half the B-operand SMEM traffic
    (FA4_CAUSAL, "lpt_schedule", False, True),  # paper: +4-8% (MHA)
])
def test_fa4_mechanisms_help_or_do_not_hurt(problem, option, off, strictly):
    on_time = simulate("fa4", problem, "b200").time_s
    off_time = simulate("fa4", problem, "b200", {option: off}).time_s
    # "does not hurt" within 0.5%: e.g. 2-CTA's smaller K/V footprint buys a third ring stage, which moves
    # the timing by under 0.1% either way
    assert on_time <= off_time * 1.005
    if strictly:
        assert on_time < 0.99 * off_time
