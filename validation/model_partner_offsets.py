"""How far apart the model's co-resident CTAs start, wave by wave, in a long FA2 forward simulated without
extrapolation (no GPU; the model's counterpart of run 55's partner gaps).

Folded mode simulates the first waves of a long launch and extrapolates the rest; here every wave of
representatives is simulated (steady-state extrapolation off), and the engine's trace gives each
representative's SM and start. For each SM, the distance between consecutive starts in CTA durations, folded to
[0, 1/2], is the partners' offset (0: in step; 1/2: each starts halfway through the other).

    python validation/model_partner_offsets.py [HEADS SEQ_LEN HEAD_DIM]   (default 32 32768 64; about a minute)
"""

from __future__ import annotations

import sys
from collections import defaultdict


def partner_offsets(heads: int, seq_len: int, head_dim: int) -> tuple[object, dict[int, list[float]]]:
    """The simulated result and, per wave (the k-th pair of starts on an SM), every SM's partner offset."""
    from gpusim import AttentionProblem, simulate
    result = simulate("fa2", AttentionProblem(batch=1, heads=heads, seq_len=seq_len, head_dim=head_dim), "h200",
                      trace=True, extrapolate=False)
    starts, durations = defaultdict(list), []
    for name, sm, unit, start, duration in result.trace:
        if unit.startswith("cta slot") and name.startswith("fa2_fwd cta"):
            starts[sm].append(start)
            durations.append(duration)
    duration = sorted(durations)[len(durations) // 2]
    by_wave: dict[int, list[float]] = defaultdict(list)
    for cycles in starts.values():
        cycles.sort()
        for i, (before, after) in enumerate(zip(cycles, cycles[1:])):
            gap = (after - before) / duration % 1.0
            by_wave[i // 2].append(min(gap, 1.0 - gap))
    return result, by_wave


def main() -> int:
    heads, seq_len, head_dim = (int(a) for a in sys.argv[1:4]) if len(sys.argv) > 3 else (32, 32768, 64)
    result, by_wave = partner_offsets(heads, seq_len, head_dim)
    stats = result.launches[0]
    print(f"FA2 B=1 H={heads} N={seq_len} d={head_dim}: fold {stats.fold_factor}, {stats.simulated_ctas} "
          f"representatives, {result.time_s * 1e3:.2f} ms, DRAM reads {result.hbm_read_bytes / 1e9:.3f} GB")
    for wave in sorted(by_wave)[::3]:
        offsets = by_wave[wave]
        print(f"wave {wave:3d}: partner offset mean {sum(offsets) / len(offsets):.3f}, max {max(offsets):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
