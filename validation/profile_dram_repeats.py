"""How much the DRAM reads of one long attention forward vary from call to call on an H200, with Nsight Compute.

The campaign's `dram` group profiled each case once per run, and its three runs (and run 6) disagreed by up to
50% where one head's K/V outgrows the L2 (cuDNN d = 128, 128k tokens: 19.3-29.8 GB): how far CTAs drift out of
step, and so how often a wave re-reads K/V, differs between calls. One sample per run is no target for a model.
This profiles every gated long-sequence forward case of that group REPEATS times, each call its own kernel with the
L2 flushed before it (ncu's default cache control), so validation can compare against the median and show the
spread.

    python validation/profile_dram_repeats.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_dram_repeats.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import metric_value, profile_cases_main

REPEATS = 5
METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
CASES = [{"impl": impl, "batch": 1, "heads": 16, "seq_len": n, "head_dim": d, "causal": causal, "repeats": REPEATS}
         for impl in ("flash", "cudnn") for d in (64, 128)
         for n, causal in ((32768, False), (65536, False), (98304, False), (131072, False), (32768, True))]


def sdpa_forward(torch, case):
    """REPEATS forward calls of SDPA's FLASH (FA2) or CUDNN backend, as the campaign's `dram` driver makes them."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = SDPBackend.FLASH_ATTENTION if case["impl"] == "flash" else SDPBackend.CUDNN_ATTENTION
    shape = (case["batch"], case["heads"], case["seq_len"], case["head_dim"])
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def call():
        with sdpa_kernel([backend]):
            for _ in range(case["repeats"]):
                F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])
    return call


def profile_forwards(script: str, doc: str, name: str, cases: list, describe) -> int:
    """Profile `cases` (each `repeats` SDPA forward calls) under Nsight Compute and print, per case,
    `describe(case, reads)` of its calls' DRAM reads in bytes; the exit status."""
    status, record = profile_cases_main(script, doc, name, cases, sdpa_forward, METRICS, base_units=True)
    if record is None:
        return status
    calls = iter(record["kernels"])
    for case in cases:
        reads = [metric_value(next(calls), "dram__bytes_read.sum") for _ in range(case["repeats"])]
        print(describe(case, reads))
    return status


def main() -> int:
    return profile_forwards(__file__, __doc__, "dram_repeats", CASES, lambda case, reads: " ".join(
        [str(case[k]) for k in ("impl", "head_dim", "seq_len", "causal")] + [f"{r / 1e9:.3f}" for r in reads]))


if __name__ == "__main__":
    sys.exit(main())
