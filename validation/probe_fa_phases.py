"""When each CTA of a long FlashAttention-style forward starts and ends, and on which SM (H200, run 32).

Run 31 found FA2's K/V passes per wave growing with the waves a launch has run (1.0 at 4 waves, 1.9 at 62, d = 64
and 128k tokens): its CTAs start in step and fall out of step. SDPA's kernel cannot be instrumented, so this runs a
forward of the same shape written here in Triton (128 query rows per CTA, the K/V walked from the last tile to the
first as FA2 does, online softmax), whose CTAs record `%smid` and `%globaltimer` at their start and end. It prints,
per wave, how far apart the CTAs that share an SM start and how widely all CTAs' starts spread, and Nsight Compute
measures the same kernel's DRAM reads, so that the phases and the passes they cost come from one kernel.

    python validation/probe_fa_phases.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_probe_<date>_fa_phases.json`.
"""

from __future__ import annotations

import datetime
import math
import os
import statistics
import sys

from ncu_profile import metric_value, parse_raw_csv, profile_args, profile_script, run_cases, write_json
from profile_dram_heads import kv_reads_per_head

BASE = {"heads": 16, "seq_len": 131072, "head_dim": 64, "block_m": 128, "block_n": 64, "warps": 4, "stages": 2}
#: 1, 4 and 16 heads of the base shape, then 16 heads with FA2's tiles at d = 64 (128 x 128) and d = 128 (128 x 64,
#: one head's K/V 2.2 times the L2, where FA2 read 1.8 times as much as CTAs in step), a deeper ring, and 8 warps.
CASES = [{**BASE, "heads": h} for h in (1, 4, 16)] + [
    {**BASE, "block_n": 128}, {**BASE, "stages": 3}, {**BASE, "head_dim": 128},
    {**BASE, "head_dim": 128, "warps": 8}]
METRICS = ["dram__bytes_read.sum", "gpu__time_duration.sum", "launch__occupancy_limit_registers",
           "launch__occupancy_limit_shared_mem", "launch__registers_per_thread"]


def label(case: dict) -> str:
    return (f"H={case['heads']} d={case['head_dim']} {case['block_m']}x{case['block_n']} stages={case['stages']} "
            f"warps={case['warps']}:")


def timer_functions():
    """Triton device functions reading %globaltimer (ns) and %smid, for kernels whose CTAs record themselves."""
    import triton
    import triton.language as tl

    @triton.jit
    def stamp():
        return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False,
                                         pack=1)

    @triton.jit
    def sm_id():
        return tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)

    return stamp, sm_id


def profile_and_write(script: str, cases: list, label, out_dir: str, name: str, timelines: list) -> int:
    """Nsight Compute's DRAM reads of each case's kernel (`script --driver` runs one per case), printed beside
    `label(case)`; writes h200_probe_<date>_<name>.json with `timelines`; the exit status."""
    done = profile_script(script, METRICS, base_units=True)
    kernels = parse_raw_csv(done.stdout, with_units=True) if done is not None else []
    if len(kernels) != len(cases):
        print(f"Nsight Compute profiled {len(kernels)} kernels for {len(cases)} cases", file=sys.stderr)
    for case, k in zip(cases, kernels):
        read = metric_value(k, "dram__bytes_read.sum")
        print(label(case), "DRAM", f"{read / 1e9:.3f} GB,", f"{kv_reads_per_head(case, read):.2f} K/V reads per head",
              "regs", k.get("launch__registers_per_thread"), "CTAs per SM limit (regs, smem)",
              k.get("launch__occupancy_limit_registers"), k.get("launch__occupancy_limit_shared_mem"), flush=True)
    path = os.path.join(out_dir, f"h200_probe_{datetime.date.today()}_{name}.json")
    write_json(path, {"cases": cases, "timelines": timelines, "kernels": kernels,
                      "ncu_returncode": done.returncode if done is not None else None,
                      "ncu_stderr": done.stderr[-2000:] if done is not None else "ncu not found"}, compact=True)
    print("->", path)
    return 0 if len(kernels) == len(cases) else 1


def build_kernel():
    import triton
    import triton.language as tl

    stamp, sm_id = timer_functions()

    @triton.jit
    def forward(q_ptr, k_ptr, v_ptr, o_ptr, rec_ptr, iters_ptr, seq_len, scale_log2, delay_ns,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RECORD_CTAS: tl.constexpr = 0,
                CAUSAL: tl.constexpr = 0, DELAY: tl.constexpr = 0, MEMORY_ONLY: tl.constexpr = 0,
                WALK_UP: tl.constexpr = 0, K_ONLY: tl.constexpr = 0, NO_Q: tl.constexpr = 0, NO_O: tl.constexpr = 0):
        mb = tl.program_id(0)
        head = tl.program_id(1)
        cta = head * tl.num_programs(0) + mb
        start = stamp()
        base = head.to(tl.int64) * seq_len * D
        rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, D)
        if NO_Q:  # no Q read (probe_fa_causal_walks.py --no-qo)
            q = tl.zeros((BLOCK_M, D), tl.bfloat16)
        else:
            q = tl.load(q_ptr + base + rows[:, None] * D + cols[None, :])
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        if CAUSAL:  # up to the diagonal (probe_fa_causal.py)
            n_tiles = ((mb + 1) * BLOCK_M + BLOCK_N - 1) // BLOCK_N
        else:
            n_tiles = seq_len // BLOCK_N
        if DELAY == 2:  # this CTA's wait per iteration: a hash of its index mod 1024, even over [0, 2 delay_ns)
            wait = ((cta.to(tl.int64) * 2654435761) % 1024) * 2 * delay_ns // 1024
        elif DELAY == 1:
            wait = delay_ns.to(tl.int64)
        for i in range(0, n_tiles):
            if DELAY > 0:  # probe_fa_jitter.py: spin on the clock, a slower CTA (DELAY 2: paces that differ)
                until = stamp() + wait
                while stamp() < until:
                    pass
            if RECORD_CTAS > 0:  # the start of every iteration of the first CTAs (probe_fa_iterations.py; a row of
                if cta < RECORD_CTAS:  # the longest walk's length each, for causal walks: probe_fa_causal_walks.py)
                    tl.store(iters_ptr + cta * (seq_len // BLOCK_N) + i, stamp())
            if WALK_UP:  # first tile first (probe_fa_causal_walks.py --bisect)
                keys = i * BLOCK_N + tl.arange(0, BLOCK_N)
            else:
                keys = (n_tiles - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)  # last tile first, as FA2 walks
            k = tl.load(k_ptr + base + keys[None, :] * D + cols[:, None])
            if MEMORY_ONLY and K_ONLY:  # K's loads alone (--bisect)
                acc += tl.sum(k.to(tl.float32), 1)[None, :]
            elif MEMORY_ONLY:  # the same loads without the arithmetic (probe_fa_causal_walks.py --memory-only)
                v = tl.load(v_ptr + base + keys[:, None] * D + cols[None, :])
                acc += (tl.sum(k.to(tl.float32), 1) + tl.sum(v.to(tl.float32), 0))[None, :]
            else:
                v = tl.load(v_ptr + base + keys[:, None] * D + cols[None, :])
                s = tl.dot(q, k) * scale_log2
                if CAUSAL:
                    s = tl.where(keys[None, :] <= rows[:, None], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                if CAUSAL:  # rows whose keys so far are all masked
                    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                else:
                    m_safe = m_new
                p = tl.exp2(s - m_safe[:, None])
                alpha = tl.exp2(m_i - m_safe)
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(tl.bfloat16), v)
                m_i = m_new
        if MEMORY_ONLY:
            acc += tl.sum(q.to(tl.float32), 0)[None, :]  # Q read too
            l_i = tl.full((BLOCK_M,), 1.0, tl.float32)
        acc = acc / l_i[:, None]
        if NO_O:  # one row of O written
            tl.store(o_ptr + base + mb * BLOCK_M * D + cols, tl.sum(acc, 0).to(tl.bfloat16))
        else:
            tl.store(o_ptr + base + rows[:, None] * D + cols[None, :], acc.to(tl.bfloat16))
        end = stamp()
        tl.store(rec_ptr + cta * 3, sm_id().to(tl.int64))
        tl.store(rec_ptr + cta * 3 + 1, start)
        tl.store(rec_ptr + cta * 3 + 2, end)

    return forward


def make_call(torch, case, record_ctas: int = 0):
    """A callable that runs `case` once (causal when `case["causal"]`; each K/V iteration first waiting
    `case["delay_ns"]` when `case["delay"]` is 1, a per-CTA share of twice that when 2) and returns its per-CTA
    (sm, start, end) records; with `record_ctas`, the first that many CTAs also stamp every iteration's start into
    `call.iterations` (CTAs x tiles)."""
    causal = bool(case.get("causal"))
    kernel = build_kernel()
    shape = (case["heads"], case["seq_len"], case["head_dim"])
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if case.get("kv_gap_bytes"):  # K and V in one buffer, V that many bytes past K's end (probe_fa_causal_walks.py)
        n, gap = k.numel(), case["kv_gap_bytes"] // 2
        kv = torch.randn(2 * n + gap, device="cuda", dtype=torch.bfloat16)
        k, v = kv[:n].view(shape), kv[n + gap:].view(shape)
    o = torch.empty_like(q)
    grid = (case["seq_len"] // case["block_m"], case["heads"])
    rec = torch.zeros(grid[0] * grid[1] * 3, device="cuda", dtype=torch.int64)
    n_tiles = case["seq_len"] // case["block_n"]
    iterations = torch.zeros(max(1, record_ctas * n_tiles), device="cuda", dtype=torch.int64)
    scale_log2 = case["head_dim"] ** -0.5 * 1.4426950408889634

    def call():
        call.compiled = kernel[grid](q, k, v, o, rec, iterations, case["seq_len"], scale_log2, case.get("delay_ns", 0),
                                     D=case["head_dim"], BLOCK_M=case["block_m"], BLOCK_N=case["block_n"],
                                     RECORD_CTAS=record_ctas, CAUSAL=int(causal), DELAY=case.get("delay", 0),
                                     MEMORY_ONLY=int(case.get("memory_only", 0)),
                                     WALK_UP=int(case.get("walk_up", 0)), K_ONLY=int(case.get("k_only", 0)),
                                     NO_Q=int(case.get("no_qo", 0) or case.get("no_q", 0)),
                                     NO_O=int(case.get("no_qo", 0) or case.get("no_o", 0)),
                                     num_warps=case["warps"], num_stages=case["stages"])
        return rec
    call.iterations = iterations
    call.compiled = None  # the compiled kernel, once called (its PTX: call.compiled.asm["ptx"])

    def error() -> float:
        """Largest |difference| from float32 attention over 256 query rows of head 0: the first, or rows 1024-1279
        when causal (whose first rows see few keys)."""
        first = 1024 if causal else 0
        rows, keys = slice(first, first + 256), (first + 256 if causal else case["seq_len"])
        scores = q[0, rows].float() @ k[0, :keys].float().T * case["head_dim"] ** -0.5
        if causal:
            future = torch.ones(256, keys, device="cuda", dtype=torch.bool).triu(1 + first)  # keys past each row
            scores = scores.masked_fill(future, float("-inf"))
        return float((torch.softmax(scores, -1) @ v[0, :keys].float() - o[0, rows].float()).abs().max())
    call.error = error
    return call


#: Bytes zeroed to flush the L2 before a recorded call (`recorded_calls(flush_l2=True)`): as do_bench does, 256 MB.
FLUSH_BYTES = 256 * 10**6


def recorded_calls(torch, case: dict, calls: int, flush_l2: bool = False) -> tuple[list, float]:
    """Run `case` once to warm up, then `calls` times: each call's per-CTA (sm, start, end) records, and the largest
    error of its output (make_call's `error`). `flush_l2`: zero a buffer larger than the L2 before each recorded
    call, so that it finds none of its data in L2, as Nsight Compute's profiled call does (that one starts from an
    empty L2, this one from the buffer's dirty lines, as do_bench's calls do). Frees the case's tensors."""
    call = make_call(torch, case)
    call()
    torch.cuda.synchronize()
    flush = torch.empty(FLUSH_BYTES, dtype=torch.int8, device="cuda") if flush_l2 else None
    runs = []
    for _ in range(calls):
        if flush is not None:
            flush.zero_()
        rec = call()
        torch.cuda.synchronize()
        runs.append(rec.view(-1, 3).tolist())
    error = call.error()
    call = flush = None
    torch.cuda.empty_cache()
    return runs, error


#: CTAs with fewer K/V iterations are left out of pace_spread: their fixed costs, not their pace, set their time.
PACE_MIN_ITERATIONS = 64


def iterations(case: dict, query_block: int) -> int:
    """K/V iterations of the CTA at `query_block`: up to its diagonal when causal, else every tile."""
    if case.get("causal"):
        return -(-(query_block + 1) * case["block_m"] // case["block_n"])
    return case["seq_len"] // case["block_n"]


def pace_spread(case: dict, records: list) -> tuple[float, float, float]:
    """From per-CTA (sm, start, end) records in grid order (head-major): the std over the mean of CTA paces (time per
    K/V iteration) among the CTAs at one query block in different heads (an RMS over blocks, unbiased for the heads
    counted), the same over all CTAs (which, for a causal launch, also holds the paces' trend along the diagonal),
    and the median pace (the records' time unit per iteration). CTAs under PACE_MIN_ITERATIONS are left out."""
    blocks, heads = case["seq_len"] // case["block_m"], case["heads"]
    deviations, paces = [], []
    for block in range(blocks):
        n = iterations(case, block)
        if n < PACE_MIN_ITERATIONS:
            continue
        same_block = [(records[h * blocks + block][2] - records[h * blocks + block][1]) / n for h in range(heads)]
        mean = statistics.fmean(same_block)
        deviations += [p / mean - 1.0 for p in same_block]
        paces += same_block
    across_heads = math.sqrt(sum(d * d for d in deviations) / len(deviations) * heads / (heads - 1))
    return across_heads, statistics.pstdev(paces) / statistics.fmean(paces), statistics.median(paces)


def summarize(records: list) -> dict:
    """Per CTA (sm, start, end) -> how far the CTAs that share an SM start apart and how widely each wave's starts
    spread (a wave: as many CTAs as the GPU runs at once, resident per SM x SMs), in CTA durations."""
    t0 = min(r[1] for r in records)
    ctas = sorted(((r[1] - t0) / 1e3, (r[2] - t0) / 1e3, r[0]) for r in records)  # us
    duration = sorted(e - s for s, e, _ in ctas)[len(ctas) // 2]
    by_sm: dict = {}
    for s, e, sm in ctas:
        by_sm.setdefault(sm, []).append((s, e))
    # resident CTAs per SM: how many run on its SM at each CTA's midpoint (the median over CTAs)
    live = sorted(sum(1 for s2, e2 in spans if s2 <= (s + e) / 2 < e2) for spans in by_sm.values() for s, e in spans)
    resident = live[len(live) // 2]
    slots = resident * len(by_sm)
    waves = []
    for w in range(0, len(ctas) // slots):
        starts = [s for s, _, _ in ctas[w * slots:(w + 1) * slots]]
        # each CTA's phase: its start, in CTA durations, relative to the wave's median start
        mid = sorted(starts)[len(starts) // 2]
        phases = sorted((s - mid) / duration for s in starts)
        waves.append({"wave": w, "p10": phases[len(phases) // 10], "p90": phases[9 * len(phases) // 10],
                      "min": phases[0], "max": phases[-1]})
    # a CTA's partner gap: its start's distance from the CTA started just before it on its SM, where that CTA started
    # alongside it (under half a CTA earlier; the other gaps are a whole CTA, the slot's previous occupant)
    partner_gaps = sorted(g for spans in by_sm.values()
                          for a, b in zip(sorted(s for s, _ in spans), sorted(s for s, _ in spans)[1:])
                          if (g := (b - a) / duration) < 0.5)
    mean_per_sm = sorted(sum(e - s for s, e in spans) / len(spans) for spans in by_sm.values())

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] if values else None
    return {"sms": len(by_sm), "ctas": len(ctas), "resident_per_sm": resident, "median_duration_us": duration,
            "waves": waves, "partner_gap": {"p50": pct(partner_gaps, 0.5), "p90": pct(partner_gaps, 0.9),
                                            "max": partner_gaps[-1] if partner_gaps else None},
            "sm_mean_duration_spread": (mean_per_sm[-1] - mean_per_sm[0]) / duration}


def main() -> int:
    args = profile_args(__doc__)
    if args.driver:
        run_cases(CASES, make_call)
        return 0
    import torch
    timelines = []
    for case in CASES:
        runs, error = recorded_calls(torch, case, 2)
        print(label(case), "max |error| over 256 rows of head 0:", f"{error:.4f}", flush=True)
        summaries = [summarize(r) for r in runs]
        for s in summaries:
            spread = " ".join(f"{w['p10']:+.2f}/{w['p90']:+.2f}" for w in s["waves"][::max(1, len(s['waves']) // 12)])
            print(label(case), s["resident_per_sm"], "per SM,", f"{s['median_duration_us']:.0f} us per CTA;",
                  "partner gap p90 / max", s["partner_gap"]["p90"], "/", s["partner_gap"]["max"],
                  "; start p10/p90 by wave:", spread, flush=True)
        timelines.append({"case": case, "max_abs_error": error, "summaries": summaries, "records": runs[-1]})
    return profile_and_write(__file__, CASES, label, args.out, "fa_phases", timelines)

if __name__ == "__main__":
    sys.exit(main())
