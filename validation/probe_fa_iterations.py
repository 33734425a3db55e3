"""Where in its iteration each of two CTAs that share an SM is, iteration by iteration (H200, run 33).

Run 32's Triton FlashAttention forward keeps the two CTAs of an SM in step at the scale of a CTA (they start and end
within 1% of a CTA of each other), and run 30's MMA loops do the same. The model needs FA2's two CTAs to overlap
their phases within an iteration (one in its MMAs while the other is in its softmax) to run as fast as the GPU, and
it got that (until the sixteenth session) only by letting the older CTA lead by a quarter of a CTA. This runs the same kernel
(probe_fa_phases.py) with the first wave's CTAs stamping `%globaltimer` at the start of every K/V iteration, and
prints, for each pair of CTAs on one SM, how far the second one's iteration starts lie from the first one's, in
iterations: 0 is lockstep, 0.5 is half an iteration apart.

    python validation/probe_fa_iterations.py --out validation/data      (needs torch, triton and a CUDA GPU)

Writes `h200_probe_<date>_fa_iterations.json`.
"""

from __future__ import annotations

import datetime
import os
import sys

from ncu_profile import profile_args, write_json
from probe_fa_phases import BASE, label, make_call

#: One head of 128k tokens: 1024 CTAs, of which the first wave (264 at two per SM) record every iteration.
CASES = [{**BASE, "heads": 1}, {**BASE, "heads": 1, "block_n": 128}, {**BASE, "heads": 1, "head_dim": 128},
         {**BASE, "heads": 1, "stages": 3}]
RECORD_CTAS = 264


def pair_offsets(records: list, iterations: list, n_tiles: int) -> list[dict]:
    """Per SM whose two first-wave CTAs both recorded: the second CTA's iteration starts against the first's, as a
    fraction of an iteration (the first CTA's median iteration time), at the 10th / 50th / 90th percentile over the
    iterations, and the CTAs' start gap in microseconds."""
    by_sm: dict = {}
    for cta, (sm, start, _end) in enumerate(records[:RECORD_CTAS]):
        by_sm.setdefault(sm, []).append((start, cta))
    out = []
    for sm, ctas in sorted(by_sm.items()):
        if len(ctas) != 2:
            continue
        (_, a), (_, b) = sorted(ctas)  # a started first
        ta, tb = iterations[a * n_tiles:(a + 1) * n_tiles], iterations[b * n_tiles:(b + 1) * n_tiles]
        steps = sorted(y - x for x, y in zip(ta, ta[1:]))
        period = steps[len(steps) // 2]
        lag = sorted((y - x) / period for x, y in zip(ta, tb))
        n = len(lag)
        out.append({"sm": sm, "ctas": [a, b], "iteration_ns": period, "lag_p10": lag[n // 10], "lag_p50": lag[n // 2],
                    "lag_p90": lag[9 * n // 10], "start_gap_us": (tb[0] - ta[0]) / 1e3})
    return out


def main() -> int:
    args = profile_args(__doc__)
    import torch
    results = []
    for case in CASES:
        call = make_call(torch, case, record_ctas=RECORD_CTAS)
        call()
        torch.cuda.synchronize()
        records = call().view(-1, 3).tolist()
        torch.cuda.synchronize()
        n_tiles = case["seq_len"] // case["block_n"]
        pairs = pair_offsets(records, call.iterations.tolist(), n_tiles)
        medians = sorted(p["lag_p50"] for p in pairs)
        spread = sorted(p["lag_p90"] - p["lag_p10"] for p in pairs)
        print(label(case), f"{len(pairs)} pairs; iteration {pairs[0]['iteration_ns'] / 1e3:.2f} us;",
              "median lag (iterations) p10/p50/p90 over pairs:",
              " / ".join(f"{medians[int(q * (len(medians) - 1))]:+.3f}" for q in (0.1, 0.5, 0.9)),
              "; within a pair, p90 - p10 of the lag (median pair):", f"{spread[len(spread) // 2]:.3f}", flush=True)
        results.append({"case": case, "pairs": pairs, "max_abs_error": call.error()})
        call = None
        torch.cuda.empty_cache()
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_fa_iterations.json")
    write_json(path, {"cases": CASES, "record_ctas": RECORD_CTAS, "results": results})
    print("->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
