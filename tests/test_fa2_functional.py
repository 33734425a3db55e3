"""FlashAttention-2 forward and backward (kernels/fa2.py, kernels/fa2_backward.py) on numbers, against the
float64 reference.

Tolerance: every tensor is bf16 on the way in (Q, K, V, dO rounded), P is rounded to bf16 before each
product and O, dK, dV are stored in bf16, so errors of a few 1e-3 are expected; the bound is
relative_error < 2e-2 for bf16 outputs (O, dK, dV), the fp32 dQ accumulator and the fp32 LSE alike.
"""

from __future__ import annotations

import dataclasses
import pytest

from gpusim.errors import InputError
from gpusim.functional import run_functional
from gpusim.hardware import get_preset
from gpusim.launch import KernelPlan
from gpusim.ops import Load, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.reference import attention_backward, attention_errors, attention_forward, random_inputs, relative_error
from gpusim.simulate import run_functional_check, simulate
from gpusim.kernels.attention_common import declare_tensors
from gpusim.kernels.fa2 import build_plan
from gpusim.kernels.fa2_backward import backward_launches, default_tiles

BF16_TOL = 2e-2


def _inputs(problem: AttentionProblem, seed: int = 0):
    data = random_inputs(problem, seed, with_grad=problem.pass_ != "fwd")
    o, lse = attention_forward(data["Q"], data["K"], data["V"], problem.causal)
    if problem.pass_ == "bwd":
        data["O"], data["LSE"] = o, lse
    return data, o, lse


def _check(problem: AttentionProblem, out: dict, data: dict, o, lse) -> None:
    errors = attention_errors(problem, out, data)
    assert errors and all(error < BF16_TOL for error in errors.values()), errors


@pytest.mark.parametrize("seq_len", [97, 257, 1000])
@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_reference(seq_len, causal):
    problem = AttentionProblem(batch=1, heads=2, seq_len=seq_len, head_dim=64, causal=causal)
    data, o, lse = _inputs(problem)
    _check(problem, run_functional_check("fa2", problem, "h200", data), data, o, lse)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [8, 1], ids=["gqa_32_8", "mqa"])
@pytest.mark.parametrize("pass_", ["fwd", "bwd", "fwd_bwd"])
def test_grouped_and_multi_query(kv_heads, causal, pass_):
    heads = 32 if kv_heads == 8 else 4
    problem = AttentionProblem(batch=1, heads=heads, kv_heads=kv_heads, seq_len=19, head_dim=32, causal=causal,
                               pass_=pass_)
    data, o, lse = _inputs(problem, seed=1)
    _check(problem, run_functional_check("fa2", problem, "h200", data), data, o, lse)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
def test_decode_one_query_long_kv(causal, pass_):
    problem = AttentionProblem(batch=2, heads=2, seq_len=1, kv_len=1000, head_dim=64, causal=causal, pass_=pass_)
    data, o, lse = _inputs(problem, seed=2)
    _check(problem, run_functional_check("fa2", problem, "h200", data), data, o, lse)


@pytest.mark.parametrize("seq_len,causal", [(97, False), (257, True), (1000, True)])
@pytest.mark.parametrize("pass_", ["bwd", "fwd_bwd"])
def test_backward_matches_reference(seq_len, causal, pass_):
    problem = AttentionProblem(batch=1, heads=2, seq_len=seq_len, head_dim=64, causal=causal, pass_=pass_)
    data, o, lse = _inputs(problem, seed=3)
    _check(problem, run_functional_check("fa2", problem, "h200", data), data, o, lse)


@pytest.mark.parametrize("pass_", ["bwd", "fwd_bwd"])
def test_backward_through_sdpa_layout_copies(pass_):
    # SDPA's two copies of dO and O come first; the backward then reads the copies and still matches
    problem = AttentionProblem(batch=1, heads=2, seq_len=257, head_dim=64, causal=True, pass_=pass_)
    data, o, lse = _inputs(problem, seed=5)
    _check(problem, run_functional_check("fa2", problem, "h200", data, {"sdpa_copies": True}), data, o, lse)
    plan = build_plan(problem, get_preset("h200"), {"sdpa_copies": True})
    names = [launch.name for launch in plan.launches]
    assert names[-5:-3] == ["sdpa_copy_dO", "sdpa_copy_O"]


def test_one_head_needs_no_sdpa_copies():
    # with one head the [B, N, H, d] view FA2 wants is already contiguous, so PyTorch copies nothing (run 39)
    problem = AttentionProblem(batch=2, heads=1, seq_len=257, head_dim=64, pass_="bwd")
    plan = build_plan(problem, get_preset("h200"), {"sdpa_copies": True})
    assert not any(launch.name.startswith("sdpa_copy") for launch in plan.launches)


def test_backward_with_kv_longer_than_q_and_batch_two():
    problem = AttentionProblem(batch=2, heads=2, seq_len=120, kv_len=300, head_dim=64, causal=True, pass_="fwd_bwd")
    data, o, lse = _inputs(problem, seed=4)
    _check(problem, run_functional_check("fa2", problem, "h200", data), data, o, lse)


@pytest.mark.parametrize("causal", [False, True])
def test_backward_small_tiles_many_blocks(causal):
    """16 x 32 tiles: many K/V blocks per head and many Q blocks per CTA, ragged edges on both."""
    problem = AttentionProblem(batch=1, heads=4, kv_heads=2, seq_len=75, kv_len=90, head_dim=32, causal=causal,
                               pass_="bwd")
    data, _, _ = _inputs(problem, seed=5)
    tensors = declare_tensors(problem, backward=True)
    launches = backward_launches(problem, get_preset("h200"), tensors, {"bwd_block_m": 16, "bwd_block_n": 32})
    out = run_functional(KernelPlan(kernel="fa2", tensors=tensors, launches=launches), data)
    dq, dk, dv = attention_backward(data["Q"], data["K"], data["V"], data["dO"], causal)
    assert relative_error(out["dQ"], dq) < BF16_TOL
    assert relative_error(out["dK"], dk) < BF16_TOL
    assert relative_error(out["dV"], dv) < BF16_TOL


def test_backward_plan_shape():
    """A preprocessing launch (D = rowsum(dO * O), dQaccum cleared), one CTA per (K/V block, batch, KV head),
    and the dQ conversion launch, as run_flash_bwd_seqk_parallel launches them."""
    problem = AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1000, head_dim=128, pass_="bwd")
    tensors = declare_tensors(problem, backward=True)
    pre, main, convert = backward_launches(problem, get_preset("h200"), tensors, {})
    bm, bn, warps, _ = default_tiles(128, get_preset("h200"))
    assert (bm, bn, warps) == (64, 128, 8)
    assert default_tiles(64, get_preset("h200"))[:3] == (128, 128, 8)  # >= 144 KiB per CTA: 128 x 128
    assert len(pre.grid) == len(convert.grid) == 2 * 8 * -(-1000 // 64)
    assert len(main.grid) == 2 * 2 * -(-1000 // 128)
    assert main.threads_per_cta == 256
    assert tensors["D"].shape == (2, 8, 1000) and tensors["D"].dtype == "fp32"
    assert tensors["dQaccum"].dtype == "fp32" and tensors["dQ"].dtype == "bf16"
    # kSmemSize1colblock: Q double-buffered, one dO, K, V, P and dS: (3*64*128 + 2*128*128 + 2*64*128) * 2 bytes.
    assert main.smem_bytes_per_cta == (3 * 64 * 128 + 2 * 128 * 128 + 2 * 64 * 128) * 2


def test_preprocessing_clears_every_dq_row():
    """The preprocessing launch stores zeros to every row of dQaccum before the main launch accumulates into it."""
    problem = AttentionProblem(batch=1, heads=2, seq_len=40, head_dim=32, pass_="bwd")
    tensors = declare_tensors(problem, backward=True)
    pre = backward_launches(problem, get_preset("h200"), tensors, {})[0]
    cleared = set()
    for cta in pre.grid:  # walk the op sequence (no data needed: programs never branch on values)
        for op in pre.program(cta):
            if isinstance(op, Store) and op.dst.tensor.name == "dQaccum":
                assert not op.accumulate
                cleared.update((op.dst.index[1], row) for row in range(*op.dst.index[2]))
    assert cleared == {(h, row) for h in range(2) for row in range(40)}


@pytest.mark.parametrize("head_dim", [64, 128])
def test_backward_smem_operand_reads_match_measured_ldmatrix(head_dim):
    """SMEM read traffic of the five products of one main-loop iteration (one Q block against the CTA's K/V
    block) is what the real kernel's ldmatrix instructions move: Nsight Compute counted 1152 ldmatrix.x4
    (512 B each) per iteration for both d = 64 (128 x 128 tiles) and d = 128 (64 x 128 tiles) on an H200
    (validation/data/h200_profile_2026-11-29_fa2_bwd.json: 1.51e8 LDSM over 131072 iterations). The products
    also carry the P and dS stores, and declare the cp.async fills of the next Q and dO blocks (one tile each)."""
    problem = AttentionProblem(batch=1, heads=1, seq_len=512, head_dim=head_dim, pass_="bwd")
    tensors = declare_tensors(problem, backward=True)
    main = backward_launches(problem, get_preset("h200"), tensors, {})[1]
    bm, bn, _, _ = default_tiles(head_dim, get_preset("h200"))
    mmas = [op for op in main.program(main.grid[0]) if isinstance(op, Mma)]
    assert len(mmas) == 5 * (512 // bm)
    first_iteration = sum(op.smem_read_bytes for op in mmas[:5])
    ldmatrix_bytes = 1152 * 512
    stores = 2 * bm * bn * 2  # P, dS (bf16)
    assert first_iteration == ldmatrix_bytes + stores
    assert sum(op.smem_fill_bytes for op in mmas[:5]) == 2 * bm * head_dim * 2  # next Q, dO (bf16)


def test_backward_reads_the_sdpa_copies_once_per_head():
    # the copies read dO and O; with everything fitting L2 the kernels then find the copies there instead of
    # reading dO and O from DRAM, so the DRAM reads stay those of the plain backward. (A folded block must
    # name the copies' tiles as it names dO's: keyed by "dO", they read 1.6x more.)
    problem = AttentionProblem(batch=1, heads=16, seq_len=2048, head_dim=64, pass_="bwd")
    plain = simulate("fa2", problem, "h200")
    copied = simulate("fa2", problem, "h200", {"sdpa_copies": True})
    assert copied.hbm_read_bytes == pytest.approx(plain.hbm_read_bytes, rel=0.02)


def _ops_of(program):
    """The ops a CTA program yields, in order (an asynchronous load gets a stand-in handle)."""
    value = None
    while True:
        try:
            op = program.send(value)
        except StopIteration:
            return
        yield op
        value = object() if isinstance(op, Load) and not op.wait else None


def test_forward_walks_kv_tiles_down_from_the_diagonal_loading_in_fa2s_order():
    # flash_fwd_kernel.h: Q with the last visible K tile; then per tile: V_j once K_j has landed, S_j,
    # wait V_j, K_j-1, softmax, P V_j; tiles from the diagonal (causal: the only masked one first) down to 0
    problem = AttentionProblem(batch=1, heads=1, seq_len=384, head_dim=64, causal=True)
    plan = build_plan(problem, get_preset("h200"))
    program = plan.launches[0].program((2, 0, 0))  # Q rows 256..383 see K/V tiles 0..2 (128 keys each)
    steps = []
    for op in _ops_of(program):
        if isinstance(op, Load):
            steps.append((f"load {op.src.tensor.name}", op.src.numpy_index[2].start, op.cp_async))
        elif isinstance(op, Wait):
            steps.append(("wait",))
        elif isinstance(op, Mma):
            steps.append(("mma",))
        elif isinstance(op, Vector) and (op.mufu_ops_per_element or op.steps):
            steps.append(("softmax",))
    loads = [s for s in steps if s[0].startswith("load")]
    assert [(name, start) for name, start, _ in loads] == [
        ("load Q", 256), ("load K", 256), ("load V", 256), ("load K", 128), ("load V", 128), ("load K", 0),
        ("load V", 0)]
    assert all(cp_async for _, _, cp_async in loads)
    first = steps.index(("load V", 256, True))
    assert steps[first - 1] == ("wait",) and steps[first + 1:first + 5] == [
        ("mma",), ("wait",), ("load K", 128, True), ("softmax",)]


def test_forward_charges_the_causal_mask_on_the_tiles_it_cuts_only():
    # run 11 (ncu): a masked score tile costs FA2's forward about 1000 more warp instructions, whatever its size
    from gpusim.kernels.attention_common import MASKED_TILE_FP32_OPS

    def softmax_fp32_ops(causal: bool) -> list:
        problem = AttentionProblem(batch=1, heads=1, seq_len=384, head_dim=64, causal=causal)
        program = build_plan(problem, get_preset("h200")).launches[0].program((2, 0, 0))  # Q rows 256..383
        return [sum(fp32 for fp32, _ in op.step_ops()) for op in _ops_of(program)
                if isinstance(op, Vector) and op.steps]
    causal, full = softmax_fp32_ops(True), softmax_fp32_ops(False)
    assert len(causal) == len(full) == 3  # the diagonal tile first, then two the mask does not cut
    assert causal[0] - full[0] == pytest.approx(MASKED_TILE_FP32_OPS)
    assert causal[1:] == full[1:]



def test_forward_register_spills_are_l2_writes_that_stay_in_l2():
    # SDPA's d = 128 kernel stores 56 bytes per thread per K/V tile to local memory (its SASS, run 56): 7 KiB per
    # CTA and tile written through to the L2, where the slot's stack frame stays; O and LSE are the other writes
    problem = AttentionProblem(batch=1, heads=1, seq_len=1024, head_dim=128)
    result = simulate("fa2", problem, "h200", exact=True)
    ctas, tiles = 1024 // 128, 1024 // 64
    assert result.l2_write_bytes == 1024 * 128 * 2 + 1024 * 4 + ctas * tiles * 56 * 128
    assert result.hbm_write_bytes == 0  # nothing evicted: O and the frames stay dirty in L2 at the end


@pytest.mark.parametrize("stages, in_flight", [(1, None), (2, None), (2, 1), (3, None), (3, 2)])
def test_software_pipelined_ring_computes_attention(stages, in_flight):
    # a Triton-style ring of K/V tile pairs (stages), at most loads_in_flight pairs ahead (a slot is reloaded only
    # once its tile is consumed): decode GQA and a causal prefill whose lengths are not tile multiples
    options = {"stages": stages} | ({"loads_in_flight": in_flight} if in_flight else {})
    for problem in (AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1, kv_len=1000, head_dim=64),
                    AttentionProblem(batch=1, heads=2, seq_len=257, head_dim=64, causal=True)):
        data, o, lse = _inputs(problem)
        _check(problem, run_functional_check("fa2", problem, "h200", data, options), data, o, lse)


def test_walk_follows_a_sampled_loop_plan_down_from_the_last_tile():
    # loop sampling simulates a few iterations of a long walk: iteration i is tile tiles[-1 - i]
    from gpusim.kernels.fa2 import walk_kv_tiles
    from gpusim.ops import GlobalTensor, LoopPlan
    kv = GlobalTensor("K", (30 * 16, 8), "bf16", "input")
    q = Tile((16, 8), "bf16", "smem", "Q")
    state = tuple(Tile(shape, "fp32", "reg", name) for shape, name in (((16,), "m"), ((16,), "l"), ((16, 8), "O")))
    walk = walk_kv_tiles(LoopPlan(30, [*range(10), 28, 29]), range(30),
                         k_region=lambda j: kv.region(slice(16 * j, 16 * j + 16)),
                         v_region=lambda j: kv.region(slice(16 * j, 16 * j + 16)), q=q, q_ready=None,
                         row_state=state, scores=lambda j: None, block_n=16, instruction="mma_sync", warps_m=1,
                         warps_n=1)
    starts = [op.src.numpy_index[0].start // 16 for op in _ops_of(walk)
              if isinstance(op, Load) and op.dst.name.startswith("K")]
    assert starts == [*range(29, 19, -1), 1, 0]


def test_pipelined_ring_options_are_checked():
    problem = AttentionProblem(batch=1, heads=2, seq_len=128, head_dim=64)
    with pytest.raises(InputError, match="loads_in_flight needs stages"):
        build_plan(problem, get_preset("h200"), {"loads_in_flight": 1})
    with pytest.raises(InputError, match="stages=0 must be positive"):
        build_plan(problem, get_preset("h200"), {"stages": 0})
    with pytest.raises(InputError, match="loads_in_flight=3 must be in 1..stages"):
        build_plan(problem, get_preset("h200"), {"stages": 2, "loads_in_flight": 3})
    with pytest.raises(InputError, match="pass=bwd has no forward"):
        build_plan(dataclasses.replace(problem, pass_="bwd"), get_preset("h200"), {"stages": 2})
    assert build_plan(problem, get_preset("h200"), {"stages": 2}).launches[0].smem_bytes_per_cta == \
        (128 + 2 * 2 * 128) * 64 * 2
