"""FlashDecoding (kernels/flash_decoding.py): numbers against the float64 reference, the split heuristic,
and the timing mechanism (more CTAs -> more SMs -> more bytes in flight) on the h200 preset.

Tolerances: O is bf16 (8 mantissa bits), so relative error < 2e-2 against float64; LSE is FP32 computed
from bf16-rounded Q and K, so its relative error is far smaller and is held to 1e-3.
"""

from __future__ import annotations

import pytest

from gpusim.errors import InputError
from gpusim.hardware import get_preset
from gpusim.kernels import flash_decoding
from gpusim.kernels.flash_decoding import build_plan, num_splits_heuristic
from gpusim.problem import AttentionProblem
from gpusim.reference import attention_forward, random_inputs, relative_error
from gpusim.simulate import run_functional_check, simulate

BF16_O_TOL = 2e-2
LSE_TOL = 1e-3
H200 = get_preset("h200")


def check(problem: AttentionProblem, options=None, hardware="h200", seed=0) -> dict:
    """Run the kernel on numbers, assert O and LSE match the reference; return the plan info."""
    data = random_inputs(problem, seed=seed)
    out = run_functional_check("flash_decoding", problem, hardware, data, options)
    o_ref, lse_ref = attention_forward(data["Q"], data["K"], data["V"], causal=problem.causal)
    assert relative_error(out["O"], o_ref) < BF16_O_TOL
    assert relative_error(out["LSE"], lse_ref) < LSE_TOL
    return build_plan(problem, get_preset(hardware), options).info


# ------------------------------------------------------------------------------------------ functional
@pytest.mark.parametrize("kv_len", [1000, 257])
@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_decode_matches_reference(kv_len, num_splits):
    problem = AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1, kv_len=kv_len, head_dim=128)
    info = check(problem, {"num_splits": num_splits})
    if num_splits is not None:
        assert info["num_splits"] == num_splits  # 1000 and 257 keys are >= 3 tiles of 128
    assert info["combine"] == (info["num_splits"] > 1)


def test_gqa_32_query_8_kv_heads_packs_the_group():
    problem = AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=200, head_dim=128)
    info = check(problem)
    assert info["heads_per_cta"] == 4 and info["row_blocks"] == 1
    assert info["num_splits"] == 2  # 200 keys = 2 tiles of 128: as many splits as tiles, no more


@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_mqa(num_splits):
    check(AttentionProblem(batch=1, heads=8, kv_heads=1, seq_len=1, kv_len=500, head_dim=64),
          {"num_splits": num_splits, "block_n": 64})


@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_mha(num_splits):
    check(AttentionProblem(batch=2, heads=4, seq_len=1, kv_len=600, head_dim=64),
          {"num_splits": num_splits, "block_n": 64})


@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_causal_seq4_kv300_bottom_right(num_splits):
    problem = AttentionProblem(batch=1, heads=8, kv_heads=2, seq_len=4, kv_len=300, head_dim=128, causal=True)
    info = check(problem, {"num_splits": num_splits})
    assert info["heads_per_cta"] == 4  # 4 heads x 4 positions packed in one 64-row tile


def test_causal_row_blocks_with_empty_splits():
    # 130 positions -> 3 position blocks; the first block sees 8 of 10 K/V tiles, so with 9 splits one of
    # its splits is empty (LSE -inf, weight 0 in the combine).
    problem = AttentionProblem(batch=1, heads=2, kv_heads=1, seq_len=130, kv_len=300, head_dim=32, causal=True)
    info = check(problem, {"num_splits": 9, "block_n": 32})
    assert info["row_blocks"] == 6 and info["num_splits"] == 9


def test_mma_sync_on_a100():
    problem = AttentionProblem(batch=1, heads=6, kv_heads=2, seq_len=3, kv_len=700, head_dim=64, causal=True)
    info = check(problem, {"num_splits": 3, "block_n": 64}, hardware="a100")
    assert info["instruction"] == "mma_sync"


def test_more_splits_than_tiles_are_clamped():
    problem = AttentionProblem(batch=1, heads=4, kv_heads=1, seq_len=1, kv_len=300, head_dim=128)
    info = build_plan(problem, H200, {"num_splits": 50}).info
    assert info["num_splits"] == 3 and info["num_splits_requested"] == 50  # ceil(300 / 128) = 3 tiles


@pytest.mark.parametrize("kwargs, options, words", [
    (dict(dtype="fp8"), None, "(?i)fp8"),
    (dict(pass_="bwd"), None, "forward only"),
    ({}, {"block_m": 32}, "multiple"),
    ({}, {"num_splits": 0}, "positive"),
    ({}, {"instruction": "tcgen05"}, "no tcgen05"),
])
def test_unsupported_input_is_an_input_error(kwargs, options, words):
    problem = AttentionProblem(batch=1, heads=4, kv_heads=1, seq_len=1, kv_len=256, head_dim=64, **kwargs)
    with pytest.raises(InputError, match=words):
        build_plan(problem, H200, options)


# ------------------------------------------------------------------------------------------ heuristic
def test_heuristic_hand_checked():
    # 8 CTAs per split on 132 slots, 512 tiles: 14 splits = 112 CTAs = 0.848 of a wave, the fewest within
    # 0.85 of the best efficiency (0.97: 16 splits = 128 CTAs; 33 splits, a full 2 waves, is skipped
    # because ceil(512/33) == ceil(512/32)).
    assert num_splits_heuristic(8, 132, 512) == 14
    # 64 CTAs per split, 8 tiles: 2 splits = 128 of 132 slots.
    assert num_splits_heuristic(64, 132, 8) == 2
    # Already 0.8 of the slots: no split. One tile: nothing to split.
    assert num_splits_heuristic(106, 132, 512) == 1
    assert num_splits_heuristic(8, 132, 1) == 1
    # Never more splits than tiles.
    assert num_splits_heuristic(1, 132, 5) == 5


def test_heuristic_splits_at_batch_1_not_when_the_gpu_is_full():
    decode = dict(heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128)
    one = build_plan(AttentionProblem(batch=1, **decode), H200).info
    assert one["num_splits"] > 1
    assert one["split_ctas"] <= H200.sm_count * one["ctas_per_sm"]  # one wave
    full = build_plan(AttentionProblem(batch=16, **decode), H200).info  # 128 CTAs on 132 SMs
    assert full["num_splits"] == 1 and not full["combine"]
    # The split count is recorded in the result too.
    assert simulate("flash_decoding", AttentionProblem(batch=1, **{**decode, "kv_len": 4096}), "h200").info[
        "num_splits"] > 1


# ------------------------------------------------------------------------------------------ timing
def test_split_at_batch_1_is_much_faster_and_reads_kv_once():
    problem = AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128)
    split = simulate("flash_decoding", problem, "h200")
    single = simulate("flash_decoding", problem, "h200", {"num_splits": 1})
    assert split.info["num_splits"] > 1 and single.info["num_splits"] == 1
    # 8 CTAs can keep only 8 SMs' windows of bytes in flight; ~112 CTAs saturate HBM.
    assert single.time_s > 3 * split.time_s
    assert split.hbm_bytes == pytest.approx(problem.kv_bytes, rel=0.10)
    assert single.hbm_bytes == pytest.approx(problem.kv_bytes, rel=0.10)
    assert len(split.launches) == 2 and len(single.launches) == 1
    assert split.unit_busy["hbm"] > 0.7 > 0.2 > single.unit_busy["hbm"]


def test_no_gain_from_splitting_a_full_gpu():
    problem = AttentionProblem(batch=16, heads=32, kv_heads=8, seq_len=1, kv_len=8192, head_dim=128)
    chosen = simulate("flash_decoding", problem, "h200")
    forced = simulate("flash_decoding", problem, "h200", {"num_splits": 4})
    assert chosen.info["num_splits"] == 1
    assert forced.time_s >= chosen.time_s  # same HBM-bound stream plus a combine launch


def test_folded_agrees_with_exact():
    problem = AttentionProblem(batch=2, heads=32, kv_heads=8, seq_len=1, kv_len=8192, head_dim=128)
    folded = simulate("flash_decoding", problem, "h200")
    exact = simulate("flash_decoding", problem, "h200", exact=True)
    assert folded.info["num_splits"] > 1
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.05)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.05)


def test_partials_stay_in_l2_for_the_combine():
    # Partial outputs as large as K + V (16 heads x 16 positions x 32 splits): the combine reads back the
    # very tiles the split CTAs wrote, which are still in L2, so DRAM sees K, V and Q about once.
    problem = AttentionProblem(batch=1, heads=16, kv_heads=1, seq_len=16, kv_len=8192, head_dim=128, causal=True)
    result = simulate("flash_decoding", problem, "h200", exact=True)
    assert result.info["num_splits"] == 32
    partial_bytes = 16 * 16 * 32 * 128 * 4
    assert partial_bytes >= problem.kv_bytes
    assert result.hbm_read_bytes < 1.05 * (problem.kv_bytes + problem.q_bytes)


def test_module_contract():
    assert flash_decoding.NAME == "flash_decoding" and flash_decoding.PROBLEM is AttentionProblem
    assert {"num_splits", "block_n", "stages", "instruction"} <= set(flash_decoding.OPTIONS)
    assert "FlashDecoding" in flash_decoding.__doc__


def test_mha_fwd_entry_counts_two_ctas_per_sm_and_runs_the_forward_kernel_for_one_split():
    # FA2's mha_fwd (what PyTorch SDPA calls) passes 2 x SMs to its heuristic, so 16 x 8 = 128 CTAs still
    # split; at 32 x 8 = 256 it does not, and one split runs FA2's regular forward kernel (128-row tiles,
    # mostly padding for a decode step), slower than the split-KV kernel's 64-row tiles
    h16 = AttentionProblem(batch=16, heads=32, kv_heads=8, seq_len=1, kv_len=8192, head_dim=128)
    assert build_plan(h16, H200).info["num_splits"] == 1
    assert build_plan(h16, H200, {"api": "mha_fwd"}).info["num_splits"] > 1
    h32 = AttentionProblem(batch=32, heads=32, kv_heads=8, seq_len=1, kv_len=4096, head_dim=128)
    plan = build_plan(h32, H200, {"api": "mha_fwd"})
    assert plan.info["num_splits"] == 1 and plan.info["block_m"] == 128
    assert [launch.name for launch in plan.launches] == ["fa2_fwd"]
    sdpa = simulate("flash_decoding", h32, "h200", {"api": "mha_fwd"})
    kvcache = simulate("flash_decoding", h32, "h200")
    assert sdpa.time_s > 1.2 * kvcache.time_s
    check(AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1, kv_len=300, head_dim=64),
          {"api": "mha_fwd", "num_splits": 1})


def test_mha_fwd_split_kernel_is_fa2s_two_ctas_per_sm_with_mma_sync():
    # FA2's split kernel (run 10, ncu): mma.sync, one K and one V tile in SMEM (80 KiB at d = 128), 2 CTAs/SM
    problem = AttentionProblem(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=16384, head_dim=128)
    plan = build_plan(problem, H200, {"api": "mha_fwd"})
    assert plan.info["stages"] == 1 and plan.info["instruction"] == "mma_sync"
    split = plan.launches[0]
    assert split.smem_bytes_per_cta == 80 * 1024 and split.occupancy(H200) == 2
    assert split.threads_per_cta == 128  # FA2's 4 lock-step warps, no producer warp
    with pytest.raises(InputError, match="stages=2 with api=mha_fwd"):
        build_plan(problem, H200, {"api": "mha_fwd", "stages": 2})
    check(AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1, kv_len=1000, head_dim=64), {"api": "mha_fwd"})


def test_loads_in_flight_bounds_the_producer_ahead_of_the_consumer():
    # the campaign's Triton kernel keeps a two-deep ring in SMEM but one K/V pair in flight (build_cases.py):
    # the same numbers, the same SMEM (occupancy), and a lone CTA's walk pays a round trip per tile, so it
    # takes well over the time it takes with both pairs in flight
    options = {"num_splits": 2, "block_m": 16, "block_n": 64, "stages": 2, "instruction": "mma_sync"}
    check(AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1, kv_len=1000, head_dim=64),
          options | {"loads_in_flight": 1})
    problem = AttentionProblem(batch=1, heads=4, kv_heads=1, seq_len=1, kv_len=16384, head_dim=128)
    one = build_plan(problem, H200, options | {"loads_in_flight": 1})
    assert one.launches[0].smem_bytes_per_cta == build_plan(problem, H200, options).launches[0].smem_bytes_per_cta
    serial = simulate("flash_decoding", problem, H200, options | {"loads_in_flight": 1}).time_s
    assert serial > 1.5 * simulate("flash_decoding", problem, H200, options).time_s
    with pytest.raises(InputError, match="loads_in_flight=3 must be in 1..stages"):
        build_plan(problem, H200, options | {"loads_in_flight": 3})
    with pytest.raises(InputError, match="stages=0 must be positive"):
        build_plan(problem, H200, options | {"stages": 0})
    with pytest.raises(InputError, match="loads_in_flight with api=mha_fwd"):
        build_plan(problem, H200, {"api": "mha_fwd", "loads_in_flight": 1})


def test_serial_combine_pays_a_round_trip_per_split():
    # FA2's combine loads one split's partial rows and adds them before the next load (run 19: its time grows
    # by 0.21 us per split in a CUDA graph); a combine that loads every split at once pays one round trip
    problem = AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=16384, head_dim=128)

    def combine_s(splits: int, loads: str) -> float:
        result = simulate("flash_decoding", problem, "h200", {"num_splits": splits, "combine_loads": loads})
        return result.launches[-1].time_s

    grows_by = combine_s(32, "serial") - combine_s(8, "serial")
    assert grows_by > 24 * H200.l2_hit_latency_cycles * H200.seconds_per_cycle
    assert combine_s(32, "together") < combine_s(32, "serial") / 3


def test_serial_combine_loads_the_partials_once_the_weights_are_formed():
    # FA2's combine kernel reduces the splits' LSEs into weights first; only then does its loop load the partial
    # outputs. The combine that loads everything at once (Triton's reduce) issues the partials with the LSEs.
    from gpusim.ops import Load, Vector
    problem = AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=16384, head_dim=128)

    def first_partial_after_vector_work(loads: str) -> bool:
        combine = build_plan(problem, H200, {"num_splits": 4, "combine_loads": loads}).launches[-1]
        ops = list(combine.program(combine.grid[0]))
        first = next(i for i, op in enumerate(ops) if isinstance(op, Load) and op.src.tensor.name == "O_part")
        return any(isinstance(op, Vector) for op in ops[:first])
    assert first_partial_after_vector_work("serial")
    assert not first_partial_after_vector_work("together")


@pytest.mark.slow
@pytest.mark.parametrize("kv_len, tolerance", [(4096, 0.02), (8192, 0.04)])
def test_folded_agrees_with_exact_on_two_waves_of_latency_bound_ctas(kv_len, tolerance):
    # 512 CTAs at 2 per SM. The two CTAs on an SM slide through each other's phases over tens of iterations, so
    # their pace changes within a loop: at 4k tokens the 64-iteration loops run in full (loop_sampling.SAMPLE_ABOVE;
    # sampled above 20 iterations they ran -3.0% against exact). At 8k the 128-iteration loops are sampled, and the
    # pace the measured iterations give is one phase of the pair's slide (+3.0%). There the second wave samples its
    # loops while the first wave's CTAs have already jumped; their skipped HBM time must not count as the second
    # wave's measured bandwidth (it made the loops look HBM-saturated and jump at the fair share: -22% against
    # exact), and a jump's work keeps the SM's units busy (a younger CTA that measured its pace alone ran 12% under)
    problem = AttentionProblem(batch=64, heads=32, kv_heads=8, seq_len=1, kv_len=kv_len, head_dim=128)
    folded = simulate("flash_decoding", problem, H200, {"api": "mha_fwd"})
    exact = simulate("flash_decoding", problem, H200, {"api": "mha_fwd"}, exact=True)
    assert folded.time_s == pytest.approx(exact.time_s, rel=tolerance)


def test_triton_tiles_fit_three_ctas_per_sm():
    # the campaign's Triton split-K kernel (run 14, ncu): 16 x 64 tiles with two K and two V tiles in SMEM
    # (70 KiB) and 78 registers: 3 CTAs per SM, so 320 CTAs are one wave, not a wave and a tail
    problem = AttentionProblem(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128)
    plan = build_plan(problem, H200, {"num_splits": 5, "block_m": 16, "block_n": 64, "stages": 2,
                                      "instruction": "mma_sync"})
    split = plan.launches[0]
    assert split.smem_bytes_per_cta == 69632 and split.registers_per_thread < 80
    assert split.occupancy(H200) == 3
    assert build_plan(problem, H200).launches[0].registers_per_thread == 168  # FA2's 64 x 128 tiles
