"""The SM's instruction cache (engine.icache) and FA2's code paths (fa2.ForwardCode)."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

from gpusim.engine.icache import InstructionCache
from gpusim.errors import InputError
from gpusim.hardware import get_preset
from gpusim.kernels.fa2 import FORWARD_CODE, ForwardCode
from gpusim.ops import CodePath, Tile, Vector
from gpusim.problem import AttentionProblem
from gpusim.simulate import simulate
from test_engine import TINY, launch_of, plan_of, run

KIB = 1024
VALIDATION = Path(__file__).resolve().parent.parent / "validation"
#: instructions of a path of `kib` KiB (16-byte SASS instructions)
def instructions(kib: float) -> int:
    return int(kib * KIB / 16)


def cache() -> InstructionCache:
    return InstructionCache(32 * KIB, 16 * KIB)


def test_paths_thrash_as_the_h200_probe_measured():
    # validation/README.md runs 23 and 36: two loops of 16 KiB fit, of 20 KiB thrash; a 16 KiB loop keeps its rate
    # beside a stream, a 24 KiB one does not; two streams thrash; any one path alone never does
    cases = [([(16, True), (16, True)], False), ([(20, True), (20, True)], True),
             ([(16, True), (64, False)], False), ([(24, True), (48, False)], True),
             ([(64, False), (64, False)], True), ([(64, False)], False), ([(64, True)], False)]
    for paths, thrashes in cases:
        c = cache()
        for i, (kib, loops) in enumerate(paths):
            c.switch(None, (f"p{i}", instructions(kib), loops))
        assert c.thrashing is thrashes, paths


def test_code_that_all_fits_the_cache_never_thrashes():
    c = InstructionCache(128 * KIB, 16 * KIB)
    c.switch(None, ("first", instructions(34), False))
    c.switch(None, ("epilogue", instructions(11), False))
    c.switch(None, ("loop", instructions(25), True))
    assert not c.thrashing  # 70 KiB of code, all resident: nothing is fetched again


def test_a_loop_body_larger_than_the_cache_streams_through_it():
    c = cache()
    c.switch(None, ("big", instructions(40), True))
    c.switch(None, ("small", instructions(8), True))
    assert not c.thrashing  # 8 KiB + a 16 KiB stream window fit
    c.switch(None, ("other", instructions(40), True))
    assert c.thrashing  # two streams


def test_roles_in_the_same_path_share_it_and_leaving_restores():
    c = cache()
    loop = ("loop", instructions(24), True)
    c.switch(None, loop)
    c.switch(None, loop)
    assert not c.thrashing
    c.switch(loop, ("first", instructions(30), False))
    assert c.thrashing
    c.switch(("first", instructions(30), False), loop)
    assert not c.thrashing
    c.switch(loop, None)
    c.switch(loop, None)
    assert c.thrashing is False and not c._paths


def _two_ctas(same_path: bool, hw):
    """Two CTAs on one SM, each issuing 20 KiB loop bodies of FP32 work 100 times; different bodies thrash."""
    body = instructions(20)

    def program(cta):
        yield CodePath("a" if same_path or cta == 0 else "b", body, loops=True)
        for _ in range(100):
            yield Vector(lambda: None, [], Tile((1000,), "fp32"), fp32_ops_per_element=1.0, elements=1000,
                         instructions=4 * body)

    return run(plan_of(launch_of([0, 1], program, max_ctas_per_sm=2)), dataclasses.replace(hw, sm_count=1))


def test_different_code_paths_on_one_sm_wait_for_their_instructions():
    hw = dataclasses.replace(TINY, fp32_ops_per_clk_per_sm=1000.0, instruction_cache_bytes=32 * KIB,
                             instruction_fetch_bytes_per_clk_per_sm=32.0, instruction_stream_window_bytes=16 * KIB)
    alike, apart = _two_ctas(True, hw), _two_ctas(False, hw)
    # alike: 200 ops of 1000 FP32 ops at 1000 per clock; apart: each op also fetches 4 x 1280 instructions of 16 B,
    # both CTAs' fetches sharing 32 B/clk
    assert alike["cycles"] == pytest.approx(200, abs=2)
    assert apart["cycles"] == pytest.approx(200 * 4 * instructions(20) * 16 / 32, rel=0.01)
    assert apart["busy"]["fetch"] > 0.99 and alike["busy"]["fetch"] == 0
    off = dataclasses.replace(hw, instruction_cache_bytes=0)
    assert _two_ctas(False, off)["cycles"] == alike["cycles"]  # no instruction-fetch model: every code fits


def test_an_instruction_cache_needs_its_fetch_rate():
    with pytest.raises(InputError, match="instruction_fetch_bytes_per_clk_per_sm"):
        dataclasses.replace(get_preset("h200"), instruction_fetch_bytes_per_clk_per_sm=0.0)


def test_a_stream_window_must_fit_the_cache():
    with pytest.raises(InputError, match="instruction_stream_window_bytes"):
        dataclasses.replace(get_preset("h200"), instruction_stream_window_bytes=64 * KIB)


def test_a_short_stream_holds_only_its_own_bytes():
    c = cache()
    c.switch(None, ("loop", instructions(19), True))
    c.switch(None, ("epilogue", instructions(10.5), False))
    assert not c.thrashing  # 19 + 10.5 KiB fit; with the whole 16 KiB window they would not
    c = cache()
    c.switch(None, ("first", instructions(24), False))
    c.switch(None, ("epilogue", instructions(10.5), False))
    assert c.thrashing  # two streams, though they would fit: code run once misses either way


@pytest.mark.parametrize("seq_len, head_dim, causal, key, steps", [
    # SDPA's kernels (validation/data/fa2_sass_2026-11-30.json.gz): even shapes up to head dim 128 only
    (1024, 64, True, (64, 128, 128, 4, True, True), 1),
    (1000, 64, True, (64, 128, 128, 4, True, False), 2),
    (1024, 128, True, (128, 128, 64, 4, True, True), 2),
    (1024, 128, False, (128, 128, 64, 4, False, True), 1),
    (1024, 256, True, (256, 64, 64, 4, True, False), 2)])
def test_fa2_runs_the_code_of_the_kernel_sdpa_picks(seq_len, head_dim, causal, key, steps):
    problem = AttentionProblem(batch=1, heads=1, seq_len=seq_len, head_dim=head_dim, causal=causal)
    code = ForwardCode.of(problem, *key[1:4])
    first, loop, epilogue, mma, mask, spill = FORWARD_CODE[key]
    assert (code.first_path().instructions, code.loop_path().instructions, code.epilogue_path().instructions) == \
        (first, loop, epilogue)
    assert code.masking_steps == steps and code.softmax == loop - 2 * mma and code.spill_bytes == spill
    assert code.loop_path().loops and not code.first_path().loops


def _code_paths_script():
    """validation/fa2_code_paths.py, which reads the committed SASS (validation/data/fa2_sass_2026-11-30.json.gz)."""
    sys.path.insert(0, str(VALIDATION))
    try:
        return importlib.import_module("fa2_code_paths")
    finally:
        sys.path.remove(str(VALIDATION))


def test_fa2s_code_table_is_the_sass_and_its_first_tiles_are_the_kernels():
    script = _code_paths_script()
    found = script.kernel_paths(script.DATA)
    assert FORWARD_CODE == script.forward_code(found)
    for (d, bm, bn, warps, causal, even), paths in found.items():
        problem = AttentionProblem(batch=1, heads=1, seq_len=bm * 8 + (0 if even else 1), head_dim=d, causal=causal)
        code = ForwardCode.of(problem, bm, bn, warps)
        if code is None:  # a tile kept out of the table (no non-causal kernel to give its prologue), or d > 128 even
            continue
        # the kernel's straight-line start holds the HMMAs of masking_steps tiles
        assert paths["first_hmma"] == code.masking_steps * paths["loop_hmma"]


def test_fa2_has_no_code_paths_where_its_sass_was_not_read():
    assert ForwardCode.of(AttentionProblem(batch=1, heads=1, seq_len=1024, head_dim=80), 128, 64, 4) is None
    assert ForwardCode.of(AttentionProblem(batch=1, heads=1, seq_len=1024, head_dim=64), 64, 64, 4) is None
    assert ForwardCode.of(AttentionProblem(batch=1, heads=1, seq_len=1, kv_len=4096, head_dim=64), 128, 128, 4) is None


def test_fa2s_short_causal_ctas_wait_for_instructions_and_a_larger_cache_frees_them():
    # FA2 at N = 512: causal CTAs of 1-4 tiles run their first tile's straight-line code beside a partner in its loop
    problem = AttentionProblem(batch=4, heads=32, seq_len=512, head_dim=64, causal=True)  # two CTAs per SM
    h200 = get_preset("h200")
    default = simulate("fa2", problem, h200)
    large = simulate("fa2", problem, dataclasses.replace(h200, instruction_cache_bytes=1 << 20))
    none = simulate("fa2", problem, dataclasses.replace(h200, instruction_cache_bytes=0))
    assert default.unit_busy["fetch"] > 0 and large.unit_busy["fetch"] == none.unit_busy["fetch"] == 0
    assert default.time_s > 1.03 * large.time_s
    assert large.time_s == pytest.approx(none.time_s, rel=1e-9)
