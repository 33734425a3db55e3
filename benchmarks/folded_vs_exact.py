"""Folded against exact simulation (issue 8): on a grid of problems small enough to simulate every CTA,
print the folded run's time and byte errors against the exact run; then, on launches too long for exact mode, the
steady-state extrapolation's against the same folded launch simulated wave by wave (`extrapolate=False`). A script,
not a test: it prints figures. The target is time within 3% and HBM bytes within 1% on every row.

    python benchmarks/folded_vs_exact.py [--jobs N]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor

from gpusim import AttentionProblem, simulate
from gpusim.kernels.cudnn_options import CUDNN_BPROP_TILES, CUDNN_FPROP_SOFTMAX_EXTRA, CUDNN_FPROP_TILES

TIME_TOLERANCE = 0.03
BYTES_TOLERANCE = 0.01

GRID = [  # (kernel, problem kwargs, hardware[, options[, simulate's keywords]])
    ("naive", dict(batch=1, heads=8, seq_len=2048, head_dim=64), "h200"),
    ("naive", dict(batch=2, heads=16, seq_len=1000, head_dim=64, causal=True), "h200"),
    ("fa1", dict(batch=1, heads=32, seq_len=2048, head_dim=128), "h200"),
    ("fa1", dict(batch=2, heads=8, seq_len=1000, head_dim=64, causal=True), "h200"),
    ("fa2", dict(batch=1, heads=16, seq_len=4096, head_dim=128), "h200"),
    ("fa2", dict(batch=2, heads=8, seq_len=1000, head_dim=64), "h200"),
    ("fa2", dict(batch=1, heads=8, seq_len=2048, head_dim=128, causal=True), "h200"),
    ("fa2", dict(batch=1, heads=16, kv_heads=4, seq_len=2048, head_dim=128), "h200"),
    ("fa2", dict(batch=1, heads=8, seq_len=1024, head_dim=64, pass_="bwd"), "h200"),
    # a causal launch whose K/V is re-read from DRAM: a block of consecutive causal CTAs walks offset tiles, each CTA
    # about a step behind the one before (launch.WalkedRange, folding.steady_dispatch_lag; before them, K reads were
    # +68% at this fold of 11)
    ("fa2", dict(batch=1, heads=4, seq_len=32768, head_dim=128, causal=True), "h200"),
    # the same at 16 heads, a long launch: exact mode re-reads K/V more with each head (1.58 times per head in all),
    # folded mode less so (1.30; folding by two already reads 1.32-1.39: validation/README.md, twenty-fifth session)
    ("fa2", dict(batch=1, heads=16, seq_len=32768, head_dim=128, causal=True), "h200"),
    # many waves of two co-resident CTAs per SM, whose pace changes as they slide through each other's phases
    # (30-54% per iteration between offsets, validation/README.md, sixteenth session)
    ("fa2", dict(batch=8, heads=16, seq_len=2048, head_dim=128), "h200"),
    ("fa2", dict(batch=8, heads=16, seq_len=4096, head_dim=128), "h200"),
    ("fa3", dict(batch=1, heads=16, seq_len=1024, head_dim=64), "h200"),
    ("fa3", dict(batch=1, heads=16, seq_len=4096, head_dim=128), "h200"),
    ("fa3", dict(batch=1, heads=8, seq_len=2048, head_dim=128, causal=True), "h200"),
    ("fa3", dict(batch=1, heads=8, seq_len=1024, head_dim=128, pass_="bwd"), "h200"),
    # cuDNN's backward CTA (two consumer warpgroups held in step by a named barrier), two waves of 64-step loops:
    # with the barrier after dV the second wave's warpgroups drifted apart and folded mode was +10% off exact
    ("fa3", dict(batch=1, heads=8, seq_len=4096, head_dim=64, pass_="bwd"), "h200",
     dict(CUDNN_BPROP_TILES)),
    # long K/V walks: 70 tiles, the producer's and the consumer warpgroups' loops sampled together; causal, up to
    # 64 tiles, run in full
    ("fa3", dict(batch=1, heads=8, seq_len=12320, head_dim=128), "h200"),
    ("fa3", dict(batch=1, heads=4, seq_len=8192, head_dim=128, causal=True), "h200"),
    # causal K/V at the L2's edge, walked up from the first tile (before WalkedRange: +10.61% bytes at fold 11)
    ("fa3", dict(batch=1, heads=4, seq_len=32768, head_dim=128, causal=True), "h200"),
    # cuDNN's forward where one head's K/V (24 MiB) is about the L2's size (run 47): its sampled K/V walk's stand-in
    # chunks decide the re-reads (counting Q reads at their bytes, folded mode read K/V 2.61 times, exact 2.02)
    ("fa3", dict(batch=1, heads=1, seq_len=49152, head_dim=128), "h200",
     {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA}),
    # heads of 1.9 waves whose K/V (16.8 MB) the L2 keeps between boundaries: in each wave that straddles two heads
    # exact mode's CTAs of the old head re-read 8 MB of its K/V (the H200 read 146 MB in all, exact mode 151.5); folded
    # mode re-read almost none until a stand-in hit stayed open to the new head's chunks booked later (-4.71% bytes,
    # then +0.88%: memory.StandInHits, thirty-third session)
    ("fa3", dict(batch=1, heads=4, seq_len=32768, head_dim=128), "h200",
     {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA}),
    ("fa4", dict(batch=1, heads=16, seq_len=4096, head_dim=128), "b200"),
    ("flash_decoding", dict(batch=2, heads=32, kv_heads=8, seq_len=1, kv_len=8192, head_dim=128), "h200"),
    ("flash_decoding", dict(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=16384, head_dim=128), "h200"),
    ("flash_decoding", dict(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128), "h200"),
    # the campaign's Triton split-K decode (5 splits: 320 CTAs, 3 per SM: one wave, run 14)
    ("flash_decoding", dict(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128), "h200",
     {"num_splits": 5, "block_m": 16, "block_n": 64, "stages": 2, "instruction": "mma_sync",
      "combine_loads": "together"}),
    # the same tiles with a deeper ring (2 CTAs per SM, 1.2 waves): a tail wave that doubles up on SMs (run 13)
    ("flash_decoding", dict(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128), "h200",
     {"num_splits": 5, "block_m": 16, "block_n": 64, "stages": 3, "instruction": "mma_sync",
      "combine_loads": "together"}),
    # FA2's forward kernel as SDPA runs decode for 64 sequences: 2 CTAs per SM whose pace changes as they slide
    # through each other's phases (two waves of 64-iteration loops, run in full: loop_sampling.SAMPLE_ABOVE)
    ("flash_decoding", dict(batch=64, heads=32, kv_heads=8, seq_len=1, kv_len=4096, head_dim=128), "h200",
     {"api": "mha_fwd"}),
    # after do_bench's flush: the write-backs of its dirty lines run while the first wave's loops warm up
    ("flash_decoding", dict(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128), "h200",
     {"num_splits": 5, "block_m": 16, "block_n": 64, "stages": 2, "instruction": "mma_sync",
      "combine_loads": "together"}, {"l2_start": "flushed"}),
    ("flash_decoding", dict(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=1024, head_dim=128), "h200",
     {"api": "mha_fwd"}, {"l2_start": "flushed"}),
]


#: Long launches, each against itself simulated wave by wave. K/V that outgrows the L2 (validation/README.md,
#: thirty-first session): two heads of 131k tokens, d = 64, whose fourth wave straddles both heads (7.8 waves; 12 s wave
#: by wave), and 4 heads of 65k tokens, d = 128 (7.8 waves). K/V that fits the L2 one head at a time (thirty-second
#: session): cuDNN's forward at 4 heads of 65k tokens, d = 64, 1 CTA per SM, whose heads span 3.9 waves (the wave after
#: each boundary re-reads some of the new head), and FA2's at 16 heads (31 waves, heads of 1.9), whose window re-reads
#: more than its later waves do. Heads of two to three waves whose K/V the L2 keeps between boundaries (thirty-third
#: session), extrapolated per head, per steady wave and per boundary (steady_state.kept_between_boundaries): cuDNN's
#: forward at 8 heads of 98k tokens, d = 64, and FA3 at 32 heads of 32k tokens, d = 128 (62 waves, a headline point),
#: whose window holds only the first boundary. Simulated wave by wave, folded mode's later boundaries re-read less
#: K (5.9 MB from the fifth, 8.4 at the first); exact mode's do not (cuDNN at 8 heads of 32k, d = 128: 8.1-9.0 MB at
#: each of its 7), so there the extrapolation is nearer exact mode than every wave is.
EXTRAPOLATION_GRID = [
    ("fa2", dict(batch=1, heads=2, seq_len=131072, head_dim=64), "h200"),
    ("fa2", dict(batch=1, heads=4, seq_len=65536, head_dim=128), "h200"),
    ("fa3", dict(batch=1, heads=4, seq_len=65536, head_dim=64), "h200",
     {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA}),
    ("fa2", dict(batch=1, heads=16, seq_len=65536, head_dim=64), "h200"),
    ("fa3", dict(batch=1, heads=32, seq_len=32768, head_dim=128), "h200"),
    ("fa3", dict(batch=1, heads=8, seq_len=98304, head_dim=64), "h200",
     {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA}),
]


def compare(case: tuple, reference: dict | None = None) -> tuple:
    """The folded run's time and HBM bytes against the run with `reference`'s keywords (exact mode by default)."""
    kernel, kwargs, hw, *rest = case
    options = rest[0] if rest else None
    keywords = rest[1] if len(rest) > 1 else {}
    problem = AttentionProblem(**kwargs)
    folded = simulate(kernel, problem, hw, options, **keywords)
    other = simulate(kernel, problem, hw, options, **(reference or {"exact": True}), **keywords)
    label = problem.describe() + "".join(f" {k}={v}" for k, v in keywords.items())
    return (kernel, label, hw, folded.time_s / other.time_s - 1,
            folded.hbm_bytes / other.hbm_bytes - 1, folded.sim_wall_s, other.sim_wall_s)


def against_every_wave(case: tuple) -> tuple:
    return compare(case, {"extrapolate": False})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"{'kernel':15s} {'problem':44s} {'hw':5s} {'time':>8s} {'HBM bytes':>10s} {'folded s':>9s} "
          f"{'exact s':>8s}")
    worst_time = worst_bytes = 0.0
    with ProcessPoolExecutor(args.jobs) as pool:
        exact_rows = pool.map(compare, GRID)
        wave_rows = pool.map(against_every_wave, EXTRAPOLATION_GRID)
        for heading, rows in ((None, exact_rows), ("extrapolated against every wave simulated (folded)", wave_rows)):
            if heading:
                print(f"{heading}:")
            for kernel, problem, hw, time_err, bytes_err, folded_s, other_s in rows:
                flag = "" if abs(time_err) <= TIME_TOLERANCE and abs(bytes_err) <= BYTES_TOLERANCE else "  <-- off"
                print(f"{kernel:15s} {problem:44s} {hw:5s} {time_err:+8.2%} {bytes_err:+10.2%} {folded_s:9.2f} "
                      f"{other_s:8.2f}{flag}", flush=True)
                worst_time, worst_bytes = max(worst_time, abs(time_err)), max(worst_bytes, abs(bytes_err))
    print(f"worst |time error| {worst_time:.2%} (target {TIME_TOLERANCE:.0%}), "
          f"worst |HBM bytes error| {worst_bytes:.2%} (target {BYTES_TOLERANCE:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
