"""What Nsight Compute's `lts__t_bytes` counts on the H200, by source unit and operation (run 56).

The campaign's `l2_bytes` rows are `lts__t_bytes.sum`: bytes looked up at the L2's tag stage. The model counts the
bytes the SMs request, and misses with a sign that depends on the kernel: the decode rows read 1.50 times the K/V bytes
the SMs request (every line is read once, by one SM), FA2's forward 1.06-1.33 times, cuDNN's 0.48-0.99 times. Hopper's
L2 is two partitions joined by a fabric (`ltcfabric`): a request that its near partition forwards to the far one is
looked up twice. This profiles simple streams whose every line is read by one SM, by every SM, or written once, and
the attention kernels of the campaign's `dram` group, with the tag-stage counters split by source unit
(`srcunit_tex`: the SMs; `srcunit_ltcfabric`: the other partition), by operation and by hit or miss, as far as this
Nsight Compute knows them (`ncu --query-metrics` is asked first; the list it gave is kept in the output).

    python validation/probe_l2_traffic.py --out validation/data      (needs torch, triton and `ncu`)

Writes `h200_probe_<date>_l2_traffic.json`: per case its kernels' counters (a marker kernel of grid 1000 + the case's
index opens each case); prints each case's counters over the bytes its SMs request. Run 56's is kept gzip-compressed
(validation/build_cases.py reads it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from ncu_profile import find_ncu, metric_value, probe_main, run_cases

MIB = 2 ** 20
#: Counters asked for when this Nsight Compute lists them (`--query-metrics`), each summed over the GPU.
WANTED = re.compile(r"^lts__t_(sectors|bytes|requests)(_srcunit_[a-z0-9]+)?(_op_(read|write|atom|red))?"
                    r"(_lookup_(hit|miss))?$|^lts__d_sectors_fill_[a-z]+$|^lts__t_sectors_srcnode_[a-z0-9]+$"
                    r"|^l1tex__m_xbar2l1tex_read_bytes$|^l1tex__m_l1tex2xbar_write_bytes$")
ALWAYS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
MAX_METRICS = 48

STREAM_CASES = [
    {"kind": "read_private", "mib": 256},   # program p reads its own slice: each line read once, by one SM
    {"kind": "read_shared", "mib": 4},      # every program reads the whole buffer (it fits the L2)
    {"kind": "read_shared", "mib": 48},     # every program reads the whole buffer (it does not)
    {"kind": "write_private", "mib": 256},  # program p writes its own slice
    {"kind": "copy", "mib": 256},           # torch's copy: read once and write once
]
ATTENTION_CASES = [{"kind": "sdpa", "impl": impl, "heads": 16, "seq_len": n, "head_dim": d, "causal": causal}
                   for impl in ("flash", "cudnn")
                   for n, d, causal in ((4096, 64, False), (4096, 128, False), (32768, 128, False),
                                        (131072, 64, False), (32768, 128, True))]
OTHER_CASES = [{"kind": "decode", "batch": 8, "heads": 32, "kv_heads": 8, "kv_len": 16384, "head_dim": 128},
               {"kind": "naive", "heads": 16, "seq_len": 4096, "head_dim": 64}]
CASES = STREAM_CASES + ATTENTION_CASES + OTHER_CASES
PROGRAMS = 264  # two per SM
BLOCK = 4096    # bf16 elements per load (8 KiB)


def stream_kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def read_stream(x_ptr, out_ptr, slice_elems, SHARED: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        base = 0 if SHARED else pid * slice_elems
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, slice_elems, BLOCK):
            acc += tl.load(x_ptr + base + start + tl.arange(0, BLOCK)).to(tl.float32)
        tl.store(out_ptr + pid, tl.sum(acc))

    @triton.jit
    def write_stream(y_ptr, slice_elems, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        ones = tl.full([BLOCK], 1.0, dtype=tl.bfloat16)
        for start in range(0, slice_elems, BLOCK):
            tl.store(y_ptr + pid * slice_elems + start + tl.arange(0, BLOCK), ones)

    @triton.jit
    def marker(x_ptr):
        tl.store(x_ptr + tl.program_id(0), 1.0)

    return read_stream, write_stream, marker


def requested_bytes(case: dict) -> float:
    """The bytes the case's SMs request from the L2 in the model's terms (reads plus writes), for the printout."""
    kind = case["kind"]
    if kind == "read_private" or kind == "write_private":
        return case["mib"] * MIB
    if kind == "read_shared":
        return case["mib"] * MIB * PROGRAMS
    if kind == "copy":
        return 2 * case["mib"] * MIB
    if kind == "decode":
        return 2 * case["batch"] * case["kv_heads"] * case["kv_len"] * case["head_dim"] * 2
    n, d, h = case["seq_len"], case["head_dim"], case["heads"]
    tensor = h * n * d * 2
    if kind == "naive":
        return 4 * tensor + 4 * h * n * n * 2  # Q, K, V, O; S written and read, P written and read
    block_m = 128
    kv_passes = -(-n // block_m) * (0.5 if case["causal"] else 1.0)
    return 2 * tensor + 2 * tensor * kv_passes


def make_call(torch, case: dict):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = case["kind"]
    read_stream, write_stream, _ = stream_kernels()
    if kind in ("read_private", "read_shared"):
        shared = kind == "read_shared"
        elems = case["mib"] * MIB // 2
        x = torch.ones(elems, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(PROGRAMS, device="cuda", dtype=torch.float32)
        slice_elems = elems if shared else elems // PROGRAMS // BLOCK * BLOCK
        return lambda: read_stream[(PROGRAMS,)](x, out, slice_elems, SHARED=shared, BLOCK=BLOCK)
    if kind == "write_private":
        elems = case["mib"] * MIB // 2
        y = torch.empty(elems, device="cuda", dtype=torch.bfloat16)
        slice_elems = elems // PROGRAMS // BLOCK * BLOCK
        return lambda: write_stream[(PROGRAMS,)](y, slice_elems, BLOCK=BLOCK)
    if kind == "copy":
        x = torch.ones(case["mib"] * MIB // 2, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        return lambda: y.copy_(x)
    if kind == "decode":
        b, h, kvh, n, d = case["batch"], case["heads"], case["kv_heads"], case["kv_len"], case["head_dim"]
        q = torch.randn(b, h, 1, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, kvh, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))

        def decode():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return decode
    h, n, d = case["heads"], case["seq_len"], case["head_dim"]
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if kind == "naive":
        return lambda: torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1) @ v
    backend = SDPBackend.FLASH_ATTENTION if case["impl"] == "flash" else SDPBackend.CUDNN_ATTENTION

    def attention():
        with sdpa_kernel([backend]):
            F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])
    return attention


def run_marked_cases(cases: list) -> None:
    """ncu_profile.run_cases, each call opened by a marker kernel whose grid (1000 + index) names the case."""
    import torch
    _, _, marker = stream_kernels()
    flag = torch.zeros(4096, device="cuda", dtype=torch.float32)

    def marked(torch, case):
        index, fn = cases.index(case), make_call(torch, case)

        def call():
            marker[(1000 + index,)](flag)
            fn()
        return call
    run_cases(cases, marked)


def available_metrics() -> tuple[list[str], list[str]]:
    """(this Nsight Compute's counters that WANTED matches, as `.sum`, at most MAX_METRICS; the lts__/l1tex__ lines
    of `ncu --query-metrics`)."""
    ncu = find_ncu()
    if ncu is None:
        return [], []
    listing = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True, timeout=120).stdout
    lines = [ln for ln in listing.splitlines() if ln.startswith(("lts__", "l1tex__m_"))]
    names = [ln.split()[0] for ln in lines]
    # the plainest first: a split by one qualifier (source, operation, hit or miss) before splits by two
    wanted = sorted((name for name in names if WANTED.match(name)),
                    key=lambda name: sum(q in name for q in ("_srcunit_", "_srcnode_", "_op_", "_lookup_")))
    wanted = [f"{name}.sum" for name in wanted]
    chosen = ALWAYS + [m for m in wanted if m not in ALWAYS]
    return chosen[:MAX_METRICS], lines


def kernels_by_case(kernels: list, cases: int) -> dict[int, list]:
    """The profiled kernels after each case's marker (grid 1000 + index)."""
    by_case, current = {}, None
    for kernel in kernels:
        grid = kernel.get("Grid Size", "").replace(" ", "")
        match = re.match(r"^\(?(\d+),1,1\)?$", grid)
        if match and 1000 <= int(match.group(1)) < 1000 + cases and kernel.get("Block Size", "").startswith("(128"):
            current = int(match.group(1)) - 1000
            continue
        if current is not None:
            by_case.setdefault(current, []).append(kernel)
    return by_case


def main() -> int:
    if "--driver" in sys.argv:
        import measure_h200 as campaign
        campaign.import_gpu()
        run_marked_cases(CASES)
        return 0
    metrics, listing = available_metrics()
    print(f"{len(metrics)} counters:", " ".join(metrics), flush=True)
    done = probe_main(__file__, __doc__, "l2_traffic", CASES, make_call, metrics or ALWAYS,
                      metrics_listing=listing, programs=PROGRAMS, block=BLOCK)
    if done is None:
        return 0
    kernels, path = done
    by_case = kernels_by_case(kernels, len(CASES))
    shown = [m for m in (metrics or ALWAYS) if "sectors" in m or "bytes" in m]
    for i, case in enumerate(CASES):
        sums = {m: sum(metric_value(k, m) for k in by_case.get(i, []) if k.get(m)) for m in shown}
        requested = requested_bytes(case)
        print(json.dumps(case), f"{len(by_case.get(i, []))} kernels, requested {requested / 1e6:.1f} MB")
        for m, value in sums.items():
            per = value * (32 if "sectors" in m else 1) / requested
            print(f"   {m:<60} {value:>16.0f}  {per:8.3f} x requested")
    print("wrote", path)
    return 0 if len(by_case) == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
