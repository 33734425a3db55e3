"""The SM clock and board power that each workload settles at on an H200 under sustained load, without a profiler.
The board is capped at 700 W and the clock drops below its 1.98 GHz maximum under heavy kernels (1.71-1.80 GHz in
the Nsight Compute profiles); the project models the SM clock under load, and this measures it per workload.

Each workload runs back to back for --seconds after 0.5 s of warm-up, with at most a few calls queued ahead of the
GPU, while a background thread samples the SM clock (MHz), power (W) and clock throttle reasons every 50 ms
through pynvml (or, without it, from `nvidia-smi --query-gpu=... -lms 50`). Each call is timed with CUDA events.
Workloads: SDPA FLASH (FA2) and CUDNN forward, bf16, the FA2 forward at a GQA decode shape, an 8192^3 bf16
matmul and a 2 GiB device-to-device copy. Only reads clocks and power; never changes a clock or GPU setting.

    python validation/profile_sustained_clock.py --out validation/data      (needs torch with CUDA; about 40 s)

Writes `h200_clock_<date>.json`: device, driver and torch versions, `nvidia-smi -q -d CLOCK,POWER` before and
after, and per workload the SM clock (median, min, max), median power, throttle-reason bitmasks seen, median
call time, call count and the raw samples (or the error, when the workload failed).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections import deque

from ncu_profile import write_json

INTERVAL_S, WARMUP_S, QUEUE_DEPTH = 0.05, 0.5, 4
#: NVML clock throttle ("event") reason bits.
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clock"}


def smi(*args: str) -> str:
    """Read-only nvidia-smi query; the text, or what went wrong."""
    if not shutil.which("nvidia-smi"):
        return "nvidia-smi not found"
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"ERROR: {e!r}"


def gpu_id(torch) -> str:
    """torch's device 0 as NVML/nvidia-smi name it: its UUID when torch gives one, else the first
    CUDA_VISIBLE_DEVICES entry, else index 0."""
    uuid = str(getattr(torch.cuda.get_device_properties(0), "uuid", "") or "")
    if uuid:
        return uuid if uuid.startswith("GPU-") else "GPU-" + uuid
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return first or "0"


class Sampler:
    """Samples (time.time(), SM MHz, W, throttle-reason bitmask) every INTERVAL_S in a background thread."""

    def __init__(self, device: str):
        self.device, self.samples, self.errors = device, [], []
        self._stop, self._proc = threading.Event(), None
        try:
            import pynvml
            self.source, self._nvml = "pynvml", pynvml
            target = self._nvml_loop
        except ImportError:
            self.source, self._nvml = "nvidia-smi", None
            target = self._smi_loop
        self._thread = threading.Thread(target=target, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        self._thread.join(timeout=5)

    def _nvml_loop(self) -> None:
        nv = self._nvml
        try:
            nv.nvmlInit()
            handle = None
            if self.device.startswith("GPU-"):
                for uuid in (self.device, self.device.encode()):  # older pynvml wants bytes
                    try:
                        handle = nv.nvmlDeviceGetHandleByUUID(uuid)
                        break
                    except (nv.NVMLError, TypeError):
                        pass
            elif self.device.isdigit():
                handle = nv.nvmlDeviceGetHandleByIndex(int(self.device))
            if handle is None:
                handle = nv.nvmlDeviceGetHandleByIndex(0)
                self.errors.append(f"no NVML handle for {self.device}; sampled NVML index 0")
            get_reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                nv.nvmlDeviceGetCurrentClocksThrottleReasons

            def reasons() -> int:  # -1: not readable
                try:
                    return int(get_reasons(handle))
                except nv.NVMLError:
                    return -1
            while not self._stop.wait(INTERVAL_S):
                self.samples.append((time.time(), nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM),
                                     nv.nvmlDeviceGetPowerUsage(handle) / 1000.0, reasons()))
        except Exception as e:  # noqa: BLE001 (a sampler failure is recorded, not raised)
            self.errors.append(f"pynvml: {e!r}")

    def _smi_loop(self) -> None:
        reason_field = "clocks_throttle_reasons.active"
        if "not a valid field" in smi("-i", self.device, f"--query-gpu={reason_field}", "--format=csv"):
            reason_field = "clocks_event_reasons.active"
        cmd = (["stdbuf", "-oL"] if shutil.which("stdbuf") else []) + \
            ["nvidia-smi", "-i", self.device, f"--query-gpu=timestamp,clocks.sm,power.draw,{reason_field}",
             "--format=csv,noheader,nounits", "-lms", str(int(INTERVAL_S * 1000))]
        try:  # the timestamp field dates each line, so nvidia-smi's output buffering does not matter
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in self._proc.stdout:
                parts = [p.strip() for p in line.split(",")]
                try:
                    when = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                    self.samples.append((when, float(parts[1]), float(parts[2]), int(parts[3], 16)))
                except (ValueError, IndexError):
                    if len(self.errors) < 20:
                        self.errors.append(f"nvidia-smi: {line.strip()}")
            self._proc.wait()
        except OSError as e:
            self.errors.append(f"nvidia-smi: {e!r}")


def sdpa(name: str, backend: str, b: int, h: int, n: int, d: int, kv_heads: int | None = None,
         kv_len: int | None = None) -> tuple:
    """SDPA forward with one backend: q [b, h, n, d], k and v [b, kv_heads, kv_len, d] (GQA when kv_heads < h)."""
    kv_heads, kv_len = kv_heads or h, kv_len or n
    fields = {"batch": b, "heads": h, "kv_heads": kv_heads, "seq_len": n, "kv_len": kv_len, "head_dim": d}

    def build(torch):
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backends = [getattr(SDPBackend, backend)]
        q = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, kv_heads, kv_len, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))

        def call():
            with sdpa_kernel(backends):
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=kv_heads != h)
        return call
    return name, {"backend": backend, **fields}, build


def matmul(n: int) -> tuple:
    def build(torch):
        a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
        return lambda: torch.mm(a, b, out=c)
    return f"matmul_bf16_{n}", {"m": n, "n": n, "k": n}, build


def copy(nbytes: int) -> tuple:
    def build(torch):
        src = torch.randn(nbytes // 2, device="cuda", dtype=torch.bfloat16)  # random data, as the campaign
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    return f"copy_{nbytes >> 30}GiB", {"bytes": nbytes}, build


WORKLOADS = [  # (name, fields recorded with the result, builder)
    sdpa("fa2_fwd_d128", "FLASH_ATTENTION", 4, 16, 4096, 128),
    sdpa("fa2_fwd_d64", "FLASH_ATTENTION", 4, 32, 4096, 64),
    sdpa("fa2_fwd_d256", "FLASH_ATTENTION", 8, 8, 2048, 256),
    sdpa("cudnn_fwd_d128", "CUDNN_ATTENTION", 4, 16, 4096, 128),
    sdpa("cudnn_fwd_d64", "CUDNN_ATTENTION", 4, 32, 4096, 64),
    sdpa("fa2_decode", "FLASH_ATTENTION", 64, 32, 1, 128, kv_heads=8, kv_len=16384),
    matmul(8192),
    copy(2 << 30),
]


def run_for(torch, fn, seconds: float) -> tuple[list, float, float]:
    """Call `fn` back to back for `seconds` (wall clock), keeping at most QUEUE_DEPTH calls queued ahead of the
    GPU so the wall-clock window matches the GPU's busy time. Returns (per-call ms from CUDA events, the window's
    start and end in time.time())."""
    pending, ms = deque(), []
    t0 = time.time()
    while time.time() - t0 < seconds:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pending.append((start, end))
        if len(pending) > QUEUE_DEPTH:
            start, end = pending.popleft()
            end.synchronize()
            ms.append(start.elapsed_time(end))
    for start, end in pending:
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return ms, t0, time.time()


def measure(torch, sampler: Sampler, name: str, fields: dict, build, seconds: float) -> dict:
    row = {"name": name, **fields}
    try:
        fn = build(torch)
        fn()
        torch.cuda.synchronize()
        run_for(torch, fn, WARMUP_S)
        ms, t0, t1 = run_for(torch, fn, seconds)
        row.update({"calls": len(ms), "window": [t0, t1], "window_s": round(t1 - t0, 3),
                    "call_ms_median": statistics.median(ms), "busy_fraction": round(sum(ms) / 1e3 / (t1 - t0), 3)})
        add_clock_stats(row, sampler.samples)
    except Exception as e:  # noqa: BLE001 (one failed workload must not lose the others)
        row["error"] = f"{e!r}\n{traceback.format_exc()[-1500:]}"
    fn = None
    try:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        row.setdefault("error", f"cleanup: {e!r}")
    return row


def add_clock_stats(row: dict, samples: list) -> None:
    """The row's clock and power statistics over the samples taken in its window (time.time() seconds)."""
    if "window" not in row:
        return
    t0, t1 = row["window"]
    window = [s for s in samples if t0 <= s[0] <= t1]
    row["samples"] = len(window)
    if window:
        mhz, watts = [s[1] for s in window], [s[2] for s in window]
        masks = sorted({s[3] for s in window})
        row.update({"sm_mhz_median": statistics.median(mhz), "sm_mhz_min": min(mhz), "sm_mhz_max": max(mhz),
                    "power_w_median": round(statistics.median(watts), 1),
                    "throttle_reasons": [hex(m) for m in masks],
                    "throttle_names": sorted({v for m in masks if m > 0 for k, v in REASONS.items() if m & k}),
                    "raw_samples": [[round(s[0] - t0, 3), s[1], round(s[2], 1), hex(s[3])] for s in window]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    parser.add_argument("--seconds", type=float, default=3.0, help="sustained run per workload, after 0.5 s warm-up")
    args = parser.parse_args()
    import torch

    os.makedirs(args.out, exist_ok=True)
    device = gpu_id(torch)
    doc = {"script": os.path.basename(__file__), "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "device": torch.cuda.get_device_name(0), "gpu_id": device,
           "driver": smi("-i", device, "--query-gpu=driver_version", "--format=csv,noheader"),
           "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "seconds": args.seconds, "warmup_s": WARMUP_S, "interval_s": INTERVAL_S,
           "smi_before": smi("-i", device, "-q", "-d", "CLOCK,POWER")}
    path = os.path.join(args.out, f"h200_clock_{datetime.date.today()}.json")
    rows = []
    with Sampler(device) as sampler:
        doc.update({"sampler": sampler.source, "sampler_errors": sampler.errors, "workloads": rows})
        for name, fields, build in WORKLOADS:
            rows.append(measure(torch, sampler, name, fields, build, args.seconds))
            write_json(path, doc)  # after every workload, so a crash keeps what was measured
            print(name, "error" if "error" in rows[-1] else "done", flush=True)
        time.sleep(4 * INTERVAL_S)  # the last samples in, then every window again (nvidia-smi lines may come late)
        for row in rows:
            add_clock_stats(row, sampler.samples)
    doc["smi_after"] = smi("-i", device, "-q", "-d", "CLOCK,POWER")
    write_json(path, doc)

    print(f"{'workload':18} {'calls':>6} {'ms':>8} {'MHz med':>8} {'min-max':>11} {'W':>6}  reasons")
    for row in rows:
        if "error" in row:
            print(f"{row['name']:18} error: {row['error'].splitlines()[0][:80]}")
        elif "sm_mhz_median" not in row:
            print(f"{row['name']:18} {row['calls']:6d} {row['call_ms_median']:8.3f}  (no clock samples)")
        else:
            print(f"{row['name']:18} {row['calls']:6d} {row['call_ms_median']:8.3f} {row['sm_mhz_median']:8.0f} "
                  f"{row['sm_mhz_min']:5.0f}-{row['sm_mhz_max']:<5.0f} {row['power_w_median']:6.1f}  "
                  f"{','.join(row['throttle_reasons'])} {','.join(row['throttle_names'])}")
    print(f"sampler {sampler.source}; {len(sampler.errors)} sampler errors -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
