"""The serving subcommands: `gpusim kv-cache`, `paging`, `kv-quant`, `serve`, `offload` and `tp`.

    gpusim kv-cache --model llama3-8b --batch 8 --seq-len 4096 --dtype bf16 [--json]
    gpusim kv-cache --layers 32 --kv-heads 8 --head-dim 128 [--heads 32] --batch 1 --seq-len 1
    gpusim kv-cache --list-models
    gpusim kv-cache --model llama3-8b --compare        (every dtype, and MHA/GQA/MQA at equal size)
    gpusim paging --model llama3-8b --hardware h200 [--block-sizes 8,16,32,64,128,256] [--tile page|gather]
                  [--json] [--out DIR]     (block size: kernel slowdown, block table, allocator waste, sweet spot)
    gpusim kv-quant --model llama3-8b --hardware h200 --kv-len 32768 [--batch 8]
                    [--dtypes bf16,fp8_e4m3,fp8_e5m2,int8,int4] [--scale block|channel] [--json] [--out DIR]
    gpusim serve --model llama3-8b --hardware h200 --rate 12 --requests 300 [--chunk 512] [--kv-dtype fp8]
                 [--block-size 16|contiguous] [--json] [--out DIR]
                 (request-level serving simulation, without and with chunked prefill)
    gpusim offload --model llama3-8b --hardware h200 --batch 1 --seq-len 131072 [--fractions 0,0.1,0.25,0.5]
                   [--keep 1,0.5,0.25,0.1] [--json] [--out DIR]   (KV offload over PCIe vs H2O eviction)
    gpusim tp --model llama3-70b --hardware h200 --batch 8 --seq-len 4096 [--degrees 1,2,4,8,16] [--replicate]
              [--json] [--out DIR]                               (per-GPU KV bytes and attention time per TP degree)

`add_parsers(subparsers)` registers the subcommands on the main CLI's argparse subparsers; each handler
returns an exit code and raises InputError on bad input (the main CLI prints it and exits 2). The studies
themselves live in gpusim.serving.studies, shared with `[serving]` scenarios; this module parses flags,
prints tables (`print_study`) and writes output folders (`write_study`).
"""

from __future__ import annotations

import argparse
import json

from gpusim.errors import InputError
from gpusim.serving.kv_cache import (
    KV_DTYPE_BITS,
    SCALE_KINDS,
    KVCacheSize,
    attention_variants,
    dtype_table,
    kv_cache_size,
)
from gpusim.serving.models import SOURCES, ModelShape, get_model, list_models
from gpusim.serving.serving_sim import SERVING_KV_DTYPES


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("kv-cache", help="KV-cache bytes per token, per layer and per batch",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model preset (see --list-models)")
    p.add_argument("--layers", type=int, help="custom shape: layers")
    p.add_argument("--kv-heads", type=int, help="custom shape: KV heads")
    p.add_argument("--head-dim", type=int, help="custom shape: head dimension")
    p.add_argument("--heads", type=int, help="custom shape: query heads (default: --kv-heads, i.e. MHA)")
    p.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    p.add_argument("--seq-len", type=int, default=1, help="tokens per sequence (default 1)")
    p.add_argument("--dtype", default="bf16", choices=sorted(KV_DTYPE_BITS), help="KV element type (default bf16)")
    p.add_argument("--scale", choices=SCALE_KINDS, help="scale scheme for fp8/int8/int4 (default per dtype)")
    p.add_argument("--group-size", type=int, help="elements per scale with --scale block (default per dtype)")
    p.add_argument("--compare", action="store_true", help="also tabulate every dtype and MHA/GQA/MQA at equal size")
    p.add_argument("--list-models", action="store_true", help="list the model presets and their sources")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=kv_cache_command)

    p = subparsers.add_parser("serve", help="request-level serving simulation: chunked prefill vs not",
                              description="Continuous batching of a Poisson request stream, without and with "
                                          "chunked prefill; step times from the kernel simulator "
                                          "(gpusim.serving.serving_sim).")
    p.add_argument("--model", default="llama3-8b", help="model preset (gpusim kv-cache --list-models)")
    _hardware_args(p)
    p.add_argument("--rate", type=float, default=12.0, help="Poisson arrival rate, requests per second (default 12)")
    p.add_argument("--requests", type=int, default=300, help="requests to simulate (default 300)")
    p.add_argument("--chunk", type=int, default=512, help="chunked prefill token budget per step (default 512)")
    p.add_argument("--mean-prompt", type=float, default=None, help="mean prompt tokens (default ShareGPT 161.31)")
    p.add_argument("--mean-output", type=float, default=None, help="mean output tokens (default ShareGPT 337.99)")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal log-space sigma of the lengths (default 1)")
    p.add_argument("--max-seq-len", type=int, default=2048, help="prompt + output clipped to this (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the lengths and arrivals (default 0)")
    p.add_argument("--max-seqs", type=int, default=256, help="requests in the running batch (default 256)")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="no chunking: prompt tokens per prefill step (default max(8192, max-seq-len))")
    p.add_argument("--kv-dtype", choices=SERVING_KV_DTYPES, default=None,
                   help="KV-cache dtype (default bf16; quantized KV decodes with paged_decoding)")
    p.add_argument("--block-size", default=None, metavar="TOKENS|contiguous",
                   help="KV allocator: page size in tokens, or 0 / contiguous = reserve max-seq-len per request "
                        "(default 16). With --kv-dtype or --block-size other than bf16 / 16, the default memory "
                        "configuration also runs as the baseline, and the changes are reported")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="write summary.json, steps.csv, requests.csv and "
                                               "step_latency.png/svg (and kv_memory.png/svg) into DIR (atomically)")
    p.set_defaults(func=serve_command)

    p = subparsers.add_parser("paging", help="PagedAttention block size: kernel slowdown vs allocator waste",
                              description="Per block size: paged decode kernel time against contiguous K/V "
                                          "(timing model), block-table bytes, allocator waste and the largest "
                                          "batch on one request trace, against contiguous max-length "
                                          "reservation; names the sweet spot and why (gpusim.serving.studies).")
    p.add_argument("--model", default="llama3-8b", help="model preset (gpusim kv-cache --list-models)")
    _hardware_args(p)
    p.add_argument("--block-sizes", default="8,16,32,64,128,256", help="comma list (default 8,16,32,64,128,256)")
    p.add_argument("--batch", type=int, default=1, help="kernel: sequences in the decode step (default 1)")
    p.add_argument("--kv-len", type=int, default=4096, help="kernel: KV tokens per sequence (default 4096)")
    p.add_argument("--tile", choices=("page", "gather"), default="page",
                   help="kernel: page = one page per SMEM tile (vLLM's loop; default); gather = pages gathered "
                        "into 64-token tiles (FlashInfer-style). The other one is shown as a column")
    p.add_argument("--budget-gib", type=float, default=None,
                   help="KV memory for the max batch (default: 0.9 x HBM - bf16 weights, as gpusim serve)")
    _trace_args(p, requests=1000)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="write summary.json, paging.csv, block_size_tradeoff.png/svg and "
                                               "allocation.png/svg into DIR (atomically)")
    p.set_defaults(func=paging_command)

    p = subparsers.add_parser("kv-quant", help="KV-cache quantization: bytes, output error, decode time",
                              description="Per KV dtype: bytes per token with scales, attention output error "
                                          "against float64 (functional interpreter on a small problem), decode "
                                          "attention time (timing model) and speedup against bf16.")
    p.add_argument("--model", help="model preset (or a custom shape: --layers --kv-heads --head-dim [--heads])")
    p.add_argument("--layers", type=int, help="custom shape: layers")
    p.add_argument("--kv-heads", type=int, help="custom shape: KV heads")
    p.add_argument("--head-dim", type=int, help="custom shape: head dimension")
    p.add_argument("--heads", type=int, help="custom shape: query heads (default: --kv-heads, i.e. MHA)")
    _hardware_args(p)
    p.add_argument("--kv-len", type=int, required=True, help="KV tokens per sequence for the decode time")
    p.add_argument("--batch", type=int, default=1, help="sequences for the decode time (default 1)")
    p.add_argument("--dtypes", default="bf16,fp8_e4m3,fp8_e5m2,int8,int4",
                   help="comma list of bf16, fp16, fp8_e4m3 (fp8), fp8_e5m2, int8, int4")
    p.add_argument("--scale", choices=("block", "channel"), default="block",
                   help="block: fp16 scales per group of a token's head vector (default); channel: per channel "
                        "over a sequence (KIVI keys)")
    p.add_argument("--group-size", type=int, default=None,
                   help="block scales: elements per scale (default head_dim; int4: 32)")
    p.add_argument("--error-kv-len", type=int, default=256,
                   help="KV tokens of the small problem the error is measured on (default 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="write summary.json, kv_quant.csv and kv_quant.png/svg into DIR")
    p.set_defaults(func=kv_quant_command)

    p = subparsers.add_parser("offload", help="long context: KV offload over PCIe vs H2O eviction",
                              description="Decode step time with a fraction of the KV cache on the host "
                                          "(gpusim.serving.offload.offload_sweep), and H2O eviction time and "
                                          "output error per kept fraction (eviction_sweep).")
    p.add_argument("--model", default="llama3-8b", help="model preset (gpusim kv-cache --list-models)")
    _hardware_args(p)
    p.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    p.add_argument("--seq-len", type=int, default=131072, help="cached tokens per sequence (default 131072)")
    p.add_argument("--fractions", default="0,0.1,0.25,0.5", help="KV fractions offloaded to the host, comma list "
                                                                 "in [0, 1] (default 0,0.1,0.25,0.5)")
    p.add_argument("--keep", default="1,0.5,0.25,0.1", help="KV fractions kept by H2O eviction, comma list in "
                                                           "(0, 1] (default 1,0.5,0.25,0.1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="write summary.json, offload.csv and offload_eviction.png/svg "
                                               "into DIR (atomically)")
    p.set_defaults(func=offload_command)

    p = subparsers.add_parser("tp", help="tensor parallelism: per-GPU KV bytes and attention time per degree",
                              description="Per-GPU KV bytes and decode attention time per layer for each "
                                          "tensor-parallel degree (gpusim.serving.tensor_parallel).")
    p.add_argument("--model", default="llama3-70b", help="model preset (gpusim kv-cache --list-models)")
    _hardware_args(p)
    p.add_argument("--batch", type=int, default=8, help="sequences (default 8)")
    p.add_argument("--seq-len", type=int, default=4096, help="cached tokens per sequence (default 4096)")
    p.add_argument("--degrees", default="1,2,4,8,16", help="TP degrees, comma list (default 1,2,4,8,16)")
    p.add_argument("--replicate", action="store_true",
                   help="replicate KV heads a degree does not divide (default: report that row as an error)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="write summary.json, tp.csv and tensor_parallel.png/svg "
                                               "into DIR (atomically)")
    p.set_defaults(func=tp_command)


def _hardware_args(p) -> None:
    p.add_argument("--hardware", default="h200", help="preset name (gpusim hardware list)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a hardware field (repeatable)")


def _trace_args(p, requests: int) -> None:
    p.add_argument("--requests", type=int, default=requests, help=f"requests in the trace (default {requests})")
    p.add_argument("--mean-prompt", type=float, default=None, help="mean prompt tokens (default ShareGPT 161.31)")
    p.add_argument("--mean-output", type=float, default=None, help="mean output tokens (default ShareGPT 337.99)")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal log-space sigma of the lengths (default 1)")
    p.add_argument("--max-seq-len", type=int, default=2048, help="prompt + output clipped to this (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the lengths (and arrivals) (default 0)")


def _shape(args, command: str = "kv-cache") -> ModelShape:
    custom = [args.layers, args.kv_heads, args.head_dim, args.heads]
    if args.model:
        if any(v is not None for v in custom):
            raise InputError(f"{command}: give --model or a custom shape (--layers --kv-heads --head-dim), not both")
        return get_model(args.model)
    missing = [flag for flag, v in (("--layers", args.layers), ("--kv-heads", args.kv_heads),
                                    ("--head-dim", args.head_dim)) if v is None]
    if missing:
        raise InputError(f"{command}: give --model NAME or a custom shape (missing {', '.join(missing)})")
    heads = args.heads if args.heads is not None else args.kv_heads
    return ModelShape(name="custom", layers=args.layers, heads=heads, kv_heads=args.kv_heads, head_dim=args.head_dim)


def kv_cache_command(args) -> int:
    if args.list_models:
        return _list_models(args.json)
    shape = _shape(args)
    size = kv_cache_size(shape, batch=args.batch, seq_len=args.seq_len, dtype=args.dtype, scale=args.scale,
                         group_size=args.group_size)
    dtypes = variants = None
    if args.compare:
        dtypes = dtype_table(shape, batch=args.batch, seq_len=args.seq_len)
        if shape.heads > 1:
            variants = attention_variants(shape, batch=args.batch, seq_len=args.seq_len, dtype=args.dtype,
                                          gqa_kv_heads=_gqa_heads(shape))
    if args.json:
        data = size.to_dict()
        if dtypes is not None:
            data["dtypes"] = [row.to_dict() for row in dtypes]
        if variants is not None:
            data["attention_variants"] = [row.to_dict() for row in variants]
        print(json.dumps(data, indent=2))
        return 0
    _print_tables(size, dtypes, variants)
    return 0


def _gqa_heads(shape: ModelShape) -> int:
    if 1 < shape.kv_heads < shape.heads:
        return shape.kv_heads
    for g in (8, 4, 2, 1):
        if shape.heads % g == 0 and g < shape.heads:
            return g
    return 1


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n:,.0f} B ({n / size:.2f} {unit})"
    return f"{n:,.0f} B"


def _print_tables(size: KVCacheSize, dtypes, variants) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"KV cache: {size.model.describe()}, {size.fmt.describe()}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("bytes per token per layer", f"{size.bytes_per_token_per_layer:,}")
    if size.scale_bytes_per_token_per_layer:
        table.add_row("  of which scales", f"{size.scale_bytes_per_token_per_layer:,}")
    table.add_row("bytes per token (all layers)", _bytes(size.bytes_per_token))
    if size.bytes_per_sequence_overhead:
        table.add_row("per-channel scales per sequence", _bytes(size.bytes_per_sequence_overhead))
    if size.fixed_bytes:
        table.add_row("per-tensor scales", _bytes(size.fixed_bytes))
    table.add_row("batch x seq_len", f"{size.batch} x {size.seq_len}")
    table.add_row("total", _bytes(size.total_bytes))
    console.print(table)
    console.print(f"[dim]{size.formula}[/dim]")
    if dtypes:
        t = Table(title="by dtype (default scales)")
        for col in ("dtype", "scales", "bytes/token/layer", "bytes/token", "total"):
            t.add_column(col, justify="right" if col.startswith(("bytes", "total")) else "left")
        for row in dtypes:
            t.add_row(row.fmt.dtype, row.fmt.describe(), f"{row.bytes_per_token_per_layer:,}",
                      f"{row.bytes_per_token:,}", _bytes(row.total_bytes))
        console.print(t)
    if variants:
        t = Table(title=f"MHA / GQA / MQA at equal size ({size.model.layers} layers, {size.model.heads} query heads, "
                        f"head dim {size.model.head_dim})")
        for col in ("attention", "kv heads", "bytes/token", "vs MHA", "total"):
            t.add_column(col, justify="left" if col == "attention" else "right")
        for row in variants:
            t.add_row(row.kind, str(row.kv_heads), f"{row.size.bytes_per_token:,}", f"{row.ratio_to_mha:.4g}",
                      _bytes(row.size.total_bytes))
        console.print(t)


def _list_models(as_json: bool) -> int:
    models = list_models()
    if as_json:
        print(json.dumps([{"name": m.name, "layers": m.layers, "heads": m.heads, "kv_heads": m.kv_heads,
                           "head_dim": m.head_dim, "attention": m.attention_kind, "hidden_size": m.hidden_size,
                           "params_billions": m.params_billions, "source": SOURCES[m.name], "notes": m.notes}
                          for m in models], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="model presets")
    for col in ("name", "layers", "heads", "kv heads", "head dim", "attention", "bf16 bytes/token"):
        t.add_column(col, justify="left" if col in ("name", "attention") else "right")
    for m in models:
        t.add_row(m.name, str(m.layers), str(m.heads), str(m.kv_heads), str(m.head_dim), m.attention_kind,
                  f"{kv_cache_size(m).bytes_per_token:,}")
    Console().print(t)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry for testing before the main CLI wires `add_parsers` in."""
    parser = argparse.ArgumentParser(prog="gpusim")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}")
        return 2


# ---------------------------------------------------------------------------------------------- shared
def _number_list(command: str, flag: str, text: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{command}: {flag} {text!r}: expected a comma-separated list of "
                         f"{'whole numbers' if kind is int else 'numbers'}") from None
    if not values:
        raise InputError(f"{command}: {flag} is empty")
    return values


def _check_shape(command: str, args) -> None:
    for flag, v in (("--batch", args.batch), ("--seq-len", args.seq_len)):
        if v <= 0:
            raise InputError(f"{command}: {flag} {v} must be positive")


def _hw(args):
    from gpusim.cli import _parse_sets
    from gpusim.hardware import get_preset

    return get_preset(args.hardware).with_overrides(_parse_sets(args.set))


def _trace(command: str, args):
    from gpusim.serving.allocator import (
        SHAREGPT_MEAN_OUTPUT,
        SHAREGPT_MEAN_PROMPT,
        TraceSpec,
    )

    if args.requests <= 0:
        raise InputError(f"{command}: --requests {args.requests} must be positive")
    return TraceSpec(requests=args.requests, seed=args.seed, sigma=args.sigma, max_seq_len=args.max_seq_len,
                     mean_prompt=args.mean_prompt if args.mean_prompt is not None else SHAREGPT_MEAN_PROMPT,
                     mean_output=args.mean_output if args.mean_output is not None else SHAREGPT_MEAN_OUTPUT)


def write_outputs(out_dir, command: str, summary: dict, tables: dict, figures: dict):
    """summary.json, one CSV per `tables` entry (name -> list of row dicts; columns: the union of the rows'
    keys, in first-seen order) and NAME.png/svg per `figures` entry (name -> function returning a Figure), all
    or nothing (gpusim.atomic.replaced_dir)."""
    import csv
    from pathlib import Path

    import matplotlib.pyplot as plt

    from gpusim.atomic import replaced_dir

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{command}: --out {out} exists and is not a folder")
    with replaced_dir(out) as staging:
        (staging / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        for name, rows in tables.items():
            fields = list(dict.fromkeys(k for row in rows for k in row))
            with open(staging / name, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, restval="")
                writer.writeheader()
                writer.writerows(rows)
        for name, make in figures.items():
            fig = make()
            for ext in ("png", "svg"):
                fig.savefig(staging / f"{name}.{ext}", dpi=150 if ext == "png" else None, bbox_inches="tight")
            plt.close(fig)
    return out


def write_study(out_dir, output, command: str | None = None):
    """write_outputs for a gpusim.serving.studies.StudyOutput; returns (folder, a line naming the files)."""
    out = write_outputs(out_dir, command or output.study, output.summary, output.tables, output.figures)
    names = ["summary.json", *output.tables, *(f"{f}.png/svg" for f in output.figures)]
    return out, f"wrote {out}/{', '.join(names)}"


def finish(args, output, command: str) -> int:
    """The end every study command shares: --out files, then JSON or the study's table."""
    if args.out:
        out, wrote = write_study(args.out, output, command)
    if args.json:
        print(json.dumps({**output.summary, "out": str(out)} if args.out else output.summary, indent=2,
                         default=str))
        return 0
    print_study(output)
    if args.out:
        print(wrote)
    return 0


def print_study(output) -> None:
    """The terminal table of a study (the CLI commands and `gpusim run` of a [serving] scenario)."""
    {"paging": _print_paging, "kv_quant": _print_kv_quant, "chunked_prefill": _print_serving,
     "kv_memory": _print_serving, "offload": _print_offload, "tp": _print_tp}[output.study](output)


def _console(width: int = 130):
    from rich.console import Console

    return Console(width=max(Console().width, width))


def _table(title: str, columns, left=()):
    """A rich table; `left` columns are left-aligned labels, never wrapped."""
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right", no_wrap=col in left)
    return t


# ---------------------------------------------------------------------------------------------- paging
def paging_command(args) -> int:
    from gpusim.serving.studies import paging_study

    sizes = _number_list("paging", "--block-sizes", args.block_sizes, int)
    budget = None
    if args.budget_gib is not None:
        if args.budget_gib <= 0:
            raise InputError(f"paging: --budget-gib {args.budget_gib} must be positive")
        budget = int(args.budget_gib * 2**30)
    output = paging_study(get_model(args.model), _hw(args), block_sizes=sizes, batch=args.batch, kv_len=args.kv_len,
                          tile=args.tile, trace=_trace("paging", args), budget_bytes=budget)
    return finish(args, output, "paging")


def _print_paging(output) -> None:
    s = output.summary
    tr = s["trace"]
    other = next(k for k in s["rows"][0] if k.startswith("slowdown_") and k.endswith("_tiles"))
    console = _console()
    t = _table(f"PagedAttention block size: {s['model']} on {s['hardware']}; kernel: paged_decoding, tile={s['tile']}, "
               f"{s['kernel_problem']}; KV budget {_bytes(s['budget_bytes'])}",
               ("block size", "kernel / contiguous", other.replace("_", " "), "block table B", "waste % of reserved",
                "reserved MiB/request", "max batch"), left=("block size",))
    for r in s["rows"] + [s["contiguous"]]:
        t.add_row(str(r["block_size"]) if r["block_size"] else "contiguous (max length)", f"{r['slowdown']:.3f}x",
                  f"{r[other]:.3f}x", f"{r['block_table_bytes']:,}", f"{100 * r['waste_fraction']:.2f}%",
                  f"{r['reserved_bytes_per_request'] / 2**20:,.1f}", f"{r['max_batch']:,}")
    console.print(t)
    console.print(f"trace: {tr['requests']} requests, {tr['distribution']}; drawn: prompt mean/p50/p99 "
                  f"{tr['prompt']['mean']:.0f}/{tr['prompt']['p50']:.0f}/{tr['prompt']['p99']:.0f}, output "
                  f"{tr['output']['mean']:.0f}/{tr['output']['p50']:.0f}/{tr['output']['p99']:.0f} tokens")
    console.print(f"paged waste under 4% at block sizes {s['paged_waste_under_4pct']}; contiguous max-length "
                  f"reservation wastes {100 * s['contiguous']['waste_fraction']:.1f}%")
    console.print(f"[bold]sweet spot: {s['sweet_spot']}[/bold] ({s['why']})")


# ---------------------------------------------------------------------------------------------- kv-quant
def kv_quant_command(args) -> int:
    from gpusim.serving.studies import kv_quant_study

    shape = _shape(args, "kv-quant")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    output = kv_quant_study(shape, _hw(args), kv_len=args.kv_len, batch=args.batch, dtypes=dtypes, scale=args.scale,
                            group_size=args.group_size, error_kv_len=args.error_kv_len)
    return finish(args, output, "kv-quant")


def _print_kv_quant(output) -> None:
    s = output.summary
    console = _console()
    t = _table(f"KV quantization: {s['model']} on {s['hardware']}, decode {s['timing_problem']}",
               ("dtype", "scales", "bytes/token", "output error", "float64 ref error", "attention us/layer",
                "HBM read MB/layer", "fp32 busy", "speedup vs bf16"), left=("dtype", "scales"))
    for r in s["rows"]:
        t.add_row(r["dtype"], r["scale"], f"{r['bytes_per_token']:,}", f"{r['output_error']:.3g}",
                  f"{r['reference_error']:.3g}", f"{1e6 * r['time_s_per_layer']:,.1f}",
                  f"{r['hbm_read_bytes_per_layer'] / 1e6:,.1f}", f"{r['fp32_busy']:.0%}", f"{r['speedup']:.2f}x")
    console.print(t)
    console.print(f"[dim]error: {s['error_method']}, on {s['error_problem']}; time: {s['timing_kernel']}, "
                  f"{s['channel_or_block_timing']}[/dim]")


# ---------------------------------------------------------------------------------------------- serve
def _block_size(text: str) -> int:
    if text.strip().lower() == "contiguous":
        return 0
    try:
        return int(text)
    except ValueError:
        raise InputError(f"serve: --block-size {text!r}: a page size in tokens, or 0 / contiguous") from None


def _serve_config(args):
    from gpusim.serving.serving_sim import ServingConfig

    if args.chunk is not None and args.chunk <= 0:
        raise InputError(f"serve: --chunk {args.chunk} must be a positive number of tokens")
    return ServingConfig(model=get_model(args.model), hardware=_hw(args), rate_per_s=args.rate,
                         trace=_trace("serve", args), max_seqs=args.max_seqs, max_batch_tokens=args.max_batch_tokens,
                         kv_dtype=args.kv_dtype or "bf16",
                         block_size=16 if args.block_size is None else _block_size(args.block_size))


def serve_command(args) -> int:
    from gpusim.serving.studies import serve_memories, serving_study

    config = _serve_config(args)
    output = serving_study(config, memories=serve_memories(config), chunk_sizes=(None, args.chunk))
    return finish(args, output, "serve")


def _print_serving(output) -> None:
    results = output.results
    first = results[0]
    cfg = first.config
    t = _table(f"serving {first.model} on {first.hardware}: {len(first.requests)} requests, Poisson "
               f"{cfg.rate_per_s:g}/s, mean prompt {cfg.trace.mean_prompt:g} / output {cfg.trace.mean_output:g}, "
               f"max {cfg.trace.max_seq_len} tokens",
               ("run", "KV bytes/tok", "KV cap (req)", "max conc", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms",
                "TPOT p99 ms", "ITL p99 ms", "worst stall ms", "tokens/s", "steps"), left=("run",))
    def ms(v):
        return f"{1e3 * v:,.2f}"

    for res in results:
        t.add_row(res.label, f"{res.kv_bytes_per_token:,}", f"{res.kv_capacity_requests:,}",
                  str(res.max_concurrent_requests), ms(res.ttft_p(50)), ms(res.ttft_p(99)), ms(res.tpot_p(50)),
                  ms(res.tpot_p(99)), ms(res.itl_p(99)), ms(res.itl_max_s), f"{res.throughput_tokens_per_s:,.0f}",
                  f"{len(res.steps):,}")
    console = _console(190)
    console.print(t)
    for change in output.summary.get("changes", []):
        parts = ", ".join(f"{m.removesuffix('_ratio').replace('_', ' ')} x{v:.2f}" for m, v in change.items()
                          if m.endswith("_ratio"))
        chunk = f"chunk {change['chunk_size']}" if change["chunk_size"] else "no chunking"
        console.print(f"{change['memory']} vs {change['baseline']} ({chunk}): {parts}")
    for model in dict.fromkeys(r.cost_model for r in results):
        console.print(f"[dim]{model}[/dim]")
    console.print("[dim]KV capacity in requests: contiguous = budget / max length; paged = budget / the trace's mean "
                  "page-rounded length[/dim]")


def write_serving_outputs(out_dir, comparison):
    """summary.json, steps.csv, requests.csv and step_latency.png/svg of a ChunkingComparison."""
    from gpusim.plots.serving import step_latency_figure

    runs = (comparison.unchunked, comparison.chunked)
    return write_outputs(out_dir, "serve", {"runs": comparison.rows()},
                         {"steps.csv": [r for res in runs for r in res.step_rows()],
                          "requests.csv": [r for res in runs for r in res.request_rows()]},
                         {"step_latency": lambda: step_latency_figure(comparison)})


# ---------------------------------------------------------------------------------------------- offload, tp
def offload_command(args) -> int:
    from gpusim.serving.studies import offload_study

    _check_shape("offload", args)
    output = offload_study(get_model(args.model), _hw(args), batch=args.batch, seq_len=args.seq_len,
                           fractions=_number_list("offload", "--fractions", args.fractions),
                           keep=_number_list("offload", "--keep", args.keep))
    return finish(args, output, "offload")


def _print_offload(output) -> None:
    offload, eviction = output.results
    def ms(v):
        return f"{1e3 * v:,.3f}"

    console = _console()
    t = _table(f"offload: {offload.model} on {offload.hardware}, {offload.batch} x {offload.context_len} tokens, "
               f"KV {_bytes(offload.kv_bytes_total)}; smallest fraction that fits: {offload.min_offload_fraction:.3f}",
               ("host fraction", "host MiB/layer", "PCIe ms/layer", "compute ms/layer", "step serial ms",
                "step overlapped ms"))
    for r in offload.rows:
        t.add_row(f"{r.offload_fraction:g}", f"{r.host_bytes_per_layer / 2**20:,.1f}", ms(r.pcie_s_per_layer),
                  ms(r.compute_s_per_layer), ms(r.step_serial_s), ms(r.step_overlapped_s))
    console.print(t)
    t = _table("H2O eviction: serving-shape time, error on a small problem (float64, and flash_decoding bf16)",
               ("kept fraction", "kept tokens", "attention ms/layer", "step ms", "speedup", "H2O error",
                "recent-only error", "kernel error"))
    for r in eviction.rows:
        t.add_row(f"{r.kept_fraction:g}", f"{r.kept_tokens:,}", ms(r.attention_s_per_layer), ms(r.step_s),
                  f"{r.speedup:.2f}x", f"{r.eviction_error:.3g}", f"{r.recent_error:.3g}",
                  "-" if r.kernel_error is None else f"{r.kernel_error:.3g}")
    console.print(t)


def tp_command(args) -> int:
    from gpusim.serving.studies import tp_study

    _check_shape("tp", args)
    output = tp_study(get_model(args.model), _hw(args), batch=args.batch, seq_len=args.seq_len,
                      degrees=_number_list("tp", "--degrees", args.degrees, int), replicate=args.replicate)
    if args.out and not output.results:
        model = get_model(args.model)
        raise InputError(f"tp: no degree of {args.degrees} splits {model.name}'s {model.kv_heads} KV heads; "
                         f"nothing to plot (add --replicate)")
    return finish(args, output, "tp")


def _print_tp(output) -> None:
    s = output.summary
    t = _table(f"tensor parallel: {s['model']} on {s['hardware']}, batch {s['batch']} x {s['seq_len']} tokens, decode",
               ("tp", "heads/GPU", "KV heads/GPU", "KV per GPU", "replication", "attention us/layer", "speedup"))
    by_tp = {r.plan.tp: r for r in output.results}
    for row in s["rows"]:
        if row["error"]:
            t.add_row(str(row["tp"]), "-", "-", "[red]KV heads do not split (use --replicate)[/red]", "-", "-", "-")
            continue
        r = by_tp[row["tp"]]
        t.add_row(str(r.plan.tp), str(r.plan.heads_per_gpu), str(r.plan.kv_heads_per_gpu), _bytes(r.kv_bytes_per_gpu),
                  f"{r.plan.replication:g}x", f"{1e6 * r.attention_s_per_layer:,.2f}", f"{r.speedup:.2f}x")
    _console().print(t)
