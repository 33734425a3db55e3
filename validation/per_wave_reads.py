"""DRAM reads per wave of a folded launch simulated wave by wave (no steady-state extrapolation): what each wave's
CTAs read of each tensor, and how much of it were re-reads of tiles read before. Shows where a long launch's re-reads
come from (head boundaries, partners drifting apart), which the extrapolation must reproduce (validation/README.md,
thirty-second session).

    python validation/per_wave_reads.py fa3 --heads 4 --seq-len 65536 --head-dim 64 \\
        --options '{"block_m": 128, "block_n": 128}'
    python validation/per_wave_reads.py fa3 --cudnn --heads 8 --seq-len 32768 --head-dim 128 --exact
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from gpusim import AttentionProblem
from gpusim.engine.timing import TimingInterpreter
from gpusim.hardware import get_preset
from gpusim.kernels import get_kernel
from gpusim.kernels.cudnn_options import CUDNN_FPROP_SOFTMAX_EXTRA, CUDNN_FPROP_TILES


def per_wave(kernel: str, problem: AttentionProblem, hardware: str, options: dict | None,
             exact: bool = False) -> tuple[list, dict]:
    """(per wave of the last launch: (DRAM bytes per tensor, re-read bytes per tensor)), and that launch's stats;
    `exact` simulates every CTA (a wave is then the real GPU's)."""
    hw = get_preset(hardware)
    interpreter = TimingInterpreter(hw, exact=exact, extrapolate=False, tally_reads=True)
    run = interpreter.run(get_kernel(kernel).build_plan(problem, hw, options))
    launch = run["launches"][-1]
    slots = launch.ctas_per_sm * (hw.sm_count // launch.fold_factor)
    tallies = [tally for name, tally in interpreter.cta_reads if name == launch.name]
    waves = []
    for start in range(0, len(tallies), slots):
        dram, rereads = Counter(), Counter()
        for tally in tallies[start:start + slots]:
            dram.update(tally.dram)
            rereads.update(tally.rereads)
        waves.append((dram, rereads))
    return waves, {"name": launch.name, "fold": launch.fold_factor, "slots": slots, "waves": launch.waves}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernel")
    parser.add_argument("--heads", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--head-dim", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hardware", default="h200")
    parser.add_argument("--options", type=json.loads, default=None, help="kernel options as JSON")
    parser.add_argument("--cudnn", action="store_true", help="cuDNN's forward tiles and softmax (the H200's FA3 rows)")
    parser.add_argument("--exact", action="store_true", help="simulate every CTA (slow: minutes for 1000 CTAs)")
    args = parser.parse_args()
    if args.cudnn:
        args.options = {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA, **(args.options or {})}
    problem = AttentionProblem(batch=args.batch, heads=args.heads, seq_len=args.seq_len, head_dim=args.head_dim)
    waves, launch = per_wave(args.kernel, problem, args.hardware, args.options, args.exact)
    print(f"{args.kernel} {problem.describe()} on {args.hardware}: launch {launch['name']}, fold {launch['fold']}, "
          f"{launch['slots']} simulated CTAs per wave, {launch['waves']:.2f} waves")
    tensors = sorted({t for dram, _ in waves for t in dram})
    print(f"{'wave':>4s} " + " ".join(f"{t + ' MB':>10s} {'re-read':>8s}" for t in tensors))
    for number, (dram, rereads) in enumerate(waves, 1):
        print(f"{number:4d} " + " ".join(f"{dram[t] / 1e6:10.2f} {rereads[t] / 1e6:8.2f}" for t in tensors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
