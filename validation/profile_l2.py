"""How much a real H200's L2 keeps, measured with Nsight Compute DRAM counters.

    python validation/profile_l2.py --out validation/data        (needs torch with CUDA and `ncu`)

Writes `h200_profile_<date>_l2.json` (an `h200_profile_*` file: build_cases.py does not read it).

Parts:
  reread     torch.sum over a W-byte bf16 buffer, twice in a row, W = 8 ... 112 MiB, profiled with
             `--cache-control none` (the L2 is NOT flushed between kernels): the second sum's DRAM reads
             show how much of a streamed buffer the L2 still holds (its effective capacity for re-reads).
  write_read y.copy_(x) then torch.sum(y) (same W): how much of freshly written (dirty) data the next
             kernel finds in L2.
  attention  SDPA forward (FLASH backend = FlashAttention-2, CUDNN backend = cuDNN's Hopper kernel) at
             long sequences with different head counts, default `--cache-control all` (flushed, as the
             campaign's dram group): whether K/V re-reads from DRAM depend on the heads running together
             or on the CTAs of one head drifting apart over its many waves.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

from ncu_profile import find_ncu, parse_raw_csv, run_cases, write_json

METRICS = "gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,launch__grid_size"
SIZES_MIB = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112]
ATTENTION = [  # (backend, B, H, N, d)
    ("flash", 1, 1, 131072, 128), ("flash", 1, 4, 131072, 128), ("flash", 1, 16, 131072, 128),
    ("flash", 1, 1, 65536, 128), ("flash", 1, 16, 65536, 128), ("flash", 4, 4, 65536, 128),
    ("cudnn", 1, 1, 131072, 128), ("cudnn", 1, 4, 131072, 128), ("cudnn", 1, 16, 131072, 128),
    ("cudnn", 1, 1, 65536, 128), ("cudnn", 1, 16, 65536, 128), ("cudnn", 4, 4, 65536, 128),
]


def cases(part):
    if part in ("reread", "write_read"):
        return [{"part": part, "MiB": w} for w in SIZES_MIB]
    return [{"part": part, "backend": b, "B": bb, "H": h, "N": n, "d": d} for b, bb, h, n, d in ATTENTION]


def _callable(torch, c):
    if c["part"] == "reread":
        x = torch.randn(c["MiB"] * 2**20 // 2, device="cuda", dtype=torch.bfloat16)
        return lambda: (torch.sum(x), torch.sum(x))
    if c["part"] == "write_read":
        x = torch.randn(c["MiB"] * 2**20 // 2, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        return lambda: (y.copy_(x), torch.sum(y))
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (torch.randn(c["B"], c["H"], c["N"], c["d"], device="cuda", dtype=torch.bfloat16) for _ in range(3))
    backend = SDPBackend.FLASH_ATTENTION if c["backend"] == "flash" else SDPBackend.CUDNN_ATTENTION

    def run():
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return run


def driver(part):
    run_cases(cases(part), _callable)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="validation/data")
    ap.add_argument("--_driver")
    args = ap.parse_args()
    if args._driver:
        driver(args._driver)
        return
    import torch
    ncu = find_ncu()
    doc = {"script": "validation/profile_l2.py", "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "ncu": ncu, "parts": {}}
    for part, cache in (("reread", "none"), ("write_read", "none"), ("attention", "all")):
        t0 = time.time()
        cmd = [ncu, "--clock-control", "none", "--cache-control", cache, "--profile-from-start", "off", "--csv",
               "--page", "raw", "--print-units", "base", "--metrics", METRICS, sys.executable, __file__,
               "--_driver", part]
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
        kernels = parse_raw_csv(p.stdout)
        msgs = [ln for ln in (p.stdout + p.stderr).splitlines()
                if "==ERROR==" in ln or ln.startswith("CASE") or "Traceback" in ln or "Error" in ln][:80]
        doc["parts"][part] = {"cache_control": cache, "cases": cases(part), "rc": p.returncode,
                              "wall_s": round(time.time() - t0, 1), "kernels": kernels, "messages": msgs}
        print(part, "rc", p.returncode, "kernels", len(kernels), "in", round(time.time() - t0), "s", flush=True)
        for k in kernels:
            print("  ", k.get("Kernel Name", "")[:50], k.get("Grid Size"), k.get("dram__bytes_read.sum"),
                  k.get("dram__bytes_write.sum"), k.get("gpu__time_duration.sum"))
        if not kernels:
            print("\n".join(msgs[-15:]))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today().isoformat()}_l2.json")
    write_json(path, doc)
    print("wrote", path)


if __name__ == "__main__":
    main()
