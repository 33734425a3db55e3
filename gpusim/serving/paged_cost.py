"""The PagedAttention trade-off: paged decode kernel time against contiguous K/V, and allocator waste, per
block size (Kwon et al. 2023, Section 7.2 "Impact of block size").

`paged_kernel_sweep` times `paged_decoding` at each block size (tile=page: one page per SMEM tile, as vLLM's
kernel walks a page at a time; tile=gather: pages gathered into 64-token tiles) and the same tile loop over
contiguous K/V. `block_size_tradeoff` puts the kernel slowdown next to the allocator's waste on one trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpusim.hardware import HardwareSpec
from gpusim.problem import AttentionProblem
from gpusim.serving.allocator import TraceSpec, simulate_allocation
from gpusim.serving.models import ModelShape

BLOCK_SIZES = (8, 16, 32, 64, 128, 256)


@dataclass(frozen=True, kw_only=True)
class PagedCostRow:
    block_size: int
    tile: str
    time_s: float
    contiguous_time_s: float
    hbm_read_bytes: float
    contiguous_hbm_read_bytes: float
    num_splits: int
    stages: int
    block_table_bytes: int = 0               # the block table the kernel reads: batch x pages x 4 bytes
    waste_fraction: float | None = None     # allocator waste at this block size (block_size_tradeoff only)
    max_batch: int | None = None

    @property
    def slowdown(self) -> float:
        return self.time_s / self.contiguous_time_s

    def to_dict(self) -> dict:
        return {**self.__dict__, "slowdown": self.slowdown}


def paged_kernel_sweep(problem: AttentionProblem, hardware: HardwareSpec | str = "h200", *,
                       block_sizes=BLOCK_SIZES, tile: str = "page", page_table_seed: int = 1,
                       options: dict | None = None) -> list[PagedCostRow]:
    from gpusim.simulate import simulate

    extra = dict(options or {})
    base = simulate("paged_decoding", problem, hardware, {**extra, "paged": False})
    rows = []
    for bs in block_sizes:
        r = simulate("paged_decoding", problem, hardware,
                     {**extra, "block_size": bs, "tile": tile, "page_table_seed": page_table_seed})
        rows.append(PagedCostRow(block_size=bs, tile=tile, time_s=r.time_s, contiguous_time_s=base.time_s,
                                 hbm_read_bytes=r.hbm_read_bytes, contiguous_hbm_read_bytes=base.hbm_read_bytes,
                                 num_splits=r.info["num_splits"], stages=r.info["stages"],
                                 block_table_bytes=int(r.info["block_table_bytes"])))
    return rows


def block_size_tradeoff(model: ModelShape | str = "llama3-8b", *, batch: int = 1, kv_len: int = 4096,
                        hardware: HardwareSpec | str = "h200", trace: TraceSpec | None = None,
                        budget_bytes: int = 40 * 2**30, block_sizes=BLOCK_SIZES, tile: str = "page") -> list[PagedCostRow]:
    """Kernel slowdown (one decode step of `model`'s attention, one layer) and allocator waste per block size."""
    from gpusim.serving.models import get_model

    shape = get_model(model) if isinstance(model, str) else model
    problem = AttentionProblem(batch=batch, heads=shape.heads, kv_heads=shape.kv_heads, seq_len=1, kv_len=kv_len,
                               head_dim=shape.head_dim)
    rows = paged_kernel_sweep(problem, hardware, block_sizes=block_sizes, tile=tile)
    out = []
    for row in rows:
        alloc = simulate_allocation(shape, trace=trace, block_size=row.block_size, budget_bytes=budget_bytes)
        out.append(PagedCostRow(**{**row.__dict__, "waste_fraction": alloc.paged.waste_fraction,
                                   "max_batch": alloc.paged.max_batch}))
    return out
