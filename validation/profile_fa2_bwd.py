"""Nsight Compute profile of FlashAttention-2's backward (PyTorch SDPA, FLASH_ATTENTION backend) next to its
forward: what bounds the backward's main kernel (issue #5: the model predicts the backward ~30% too fast while
the forward fits within a few %).

    python validation/profile_fa2_bwd.py --out validation/data          (needs torch with CUDA and `ncu`)

Writes `h200_profile_<date>_fa2_bwd.json` (an `h200_profile_*` file: build_cases.py does not read it): one
row per profiled kernel (forward; backward's dot(dO, O), main and dQ-convert kernels) with its launch
configuration, SM clock, tensor-pipe activity, instruction counts per pipe, shared-memory wavefronts and bank
conflicts, local-memory (spill) bytes, L2 atomic/reduction sectors, DRAM/L2 bytes and the warp stall shares;
then the same cases timed without the profiler (CUDA events, median of 20 calls).

Cases (bf16, [B, H, N, d], the campaign's FA2-paper sizes with B*N = 16384): forward and backward alone
(`torch.autograd.grad(out, (q, k, v), g, retain_graph=True)`, so no .grad accumulation kernel) for d = 128
(H = 16) and d = 64 (H = 32) at N = 4096, non-causal, and the d = 128 backward causal.

If ncu rejects the metric list, the run is repeated with only the names `ncu --query-metrics` lists (the
dropped names are recorded), so one unknown name does not lose the whole run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess

from ncu_profile import event_timings, find_ncu, profile_until_kernels, run_cases, write_json

_STALLS = ("barrier", "long_scoreboard", "short_scoreboard", "mio_throttle", "math_pipe_throttle", "wait",
           "lg_throttle", "not_selected", "selected", "dispatch_stall", "no_instruction", "tex_throttle",
           "membar", "drain", "branch_resolving", "misc", "imc_miss", "sleeping")
METRICS = [
    "gpu__time_duration.sum", "sm__cycles_elapsed.avg.per_second", "sm__cycles_elapsed.max",
    "sm__cycles_active.avg",
    "launch__block_size", "launch__grid_size", "launch__registers_per_thread",
    "launch__shared_mem_per_block_dynamic", "launch__occupancy_limit_registers",
    "launch__occupancy_limit_shared_mem", "launch__occupancy_limit_warps",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "smsp__inst_executed.sum",
    "sm__inst_executed_pipe_tensor_op_hmma.sum",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
    "sm__pipe_tensor_op_hmma_cycles_active.sum",
    "smsp__inst_executed_pipe_lsu.sum", "smsp__inst_executed_pipe_fma.sum", "smsp__inst_executed_pipe_alu.sum",
    "smsp__inst_executed_pipe_xu.sum", "smsp__inst_executed_pipe_fp16.sum", "smsp__inst_executed_pipe_uniform.sum",
    "smsp__sass_inst_executed_op_ldsm.sum", "smsp__sass_inst_executed_op_shared_ld.sum",
    "smsp__sass_inst_executed_op_shared_st.sum", "smsp__sass_inst_executed_op_global_red.sum",
    "smsp__sass_inst_executed_op_global_ld.sum", "smsp__sass_inst_executed_op_ldgsts.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum", "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum", "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum",
    "lts__t_sectors_op_red.sum", "lts__t_sectors_op_atom.sum", "lts__t_sectors_op_read.sum",
    "lts__t_sectors_op_write.sum", "lts__t_bytes.sum", "lts__t_sectors.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes_read.sum", "dram__bytes_write.sum",
] + [f"smsp__warp_issue_stalled_{s}_per_warp_active.pct" for s in _STALLS]

SIZES = [(128, 16, 4096, False), (64, 32, 4096, False), (128, 16, 4096, True)]  # (d, H, N, causal), B*N = 16384


def cases():
    out = []
    for d, h, n, causal in SIZES:
        if not causal:
            out.append({"pass": "fwd", "B": 16384 // n, "H": h, "N": n, "d": d, "causal": causal})
        out.append({"pass": "bwd", "B": 16384 // n, "H": h, "N": n, "d": d, "causal": causal})
    return out


def _run_case(torch, c):
    """A callable that launches the case's kernels once (SDPA with the FLASH_ATTENTION backend only)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    shape = (c["B"], c["H"], c["N"], c["d"])
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=c["pass"] == "bwd")
               for _ in range(3))
    if c["pass"] == "fwd":
        def fwd():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"])
        return fwd
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"])
    g = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True)


def known_metrics(ncu: str, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): the metrics whose base name this ncu lists for the GPU (no filtering if it cannot say)."""
    p = subprocess.run([ncu, "--query-metrics", "--csv"], capture_output=True, text=True, timeout=120, check=False)
    text = p.stdout
    if p.returncode != 0 or "__" not in text:
        return wanted, []
    kept, dropped = [], []
    for m in wanted:
        base = m.split(".")[0]
        (kept if f'"{base}"' in text or f"{base}," in text or f"\n{base} " in text else dropped).append(m)
    return kept, dropped


def timings():
    return event_timings(cases(), _run_case)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="validation/data")
    ap.add_argument("--_driver", action="store_true")
    args = ap.parse_args()
    if args._driver:
        run_cases(cases(), _run_case)
        return
    import torch
    ncu = find_ncu()
    doc = {"script": "validation/profile_fa2_bwd.py",
           "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "ncu": ncu, "cases": cases(),
           "smi_before": subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.draw,"
                                         "clocks_event_reasons.active", "--format=csv"],
                                        capture_output=True, text=True, check=False).stdout}

    def metric_lists():  # the full list; after a failure, only the names this ncu lists
        yield METRICS
        kept, doc["dropped_metrics"] = known_metrics(ncu, METRICS)
        yield kept

    kernels, doc["runs"] = profile_until_kernels(__file__, metric_lists(), driver_flag="--_driver", timeout=220)
    doc["kernels"] = kernels
    doc["timings"] = timings()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today().isoformat()}_fa2_bwd.json")
    write_json(path, doc)
    print("wrote", path)
    for k in kernels:
        print(k.get("Kernel Name", "")[:50], k.get("gpu__time_duration.sum"),
              k.get("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"),
              k.get("launch__registers_per_thread"), k.get("sm__warps_active.avg.pct_of_peak_sustained_active"))
    for t in doc["timings"]:
        print(t)


if __name__ == "__main__":
    main()
