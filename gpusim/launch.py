"""Launch plans: what a kernel module hands to the interpreters.

A `KernelPlan` is the global tensors plus one or more `Launch`es run back to back (the naive path has
three or four, FlashDecoding two). A `Launch` is a grid of CTA coordinates in launch (rasterization)
order and a program factory: `program(cta)` returns one generator, or a list of generators that run
concurrently as warp roles of one CTA (producer, consumers, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

from gpusim.errors import DoesNotFitError, InputError
from gpusim.hardware import HardwareSpec
from gpusim.ops import GlobalTensor

#: Most registers one thread can address (PTX ISA, sm_80 to sm_100): a kernel's per-thread count saturates here.
MAX_REGISTERS_PER_THREAD = 255


def _no_sharing(cta) -> Mapping[str, Hashable]:
    return {}


class WalkedRange(tuple):
    """A RegionKey entry: the range [start, stop) of one index dimension that a CTA walks in tiles of `step`, from
    its stop down when `descending` (FA2 walks a causal CTA's K/V from the diagonal tile down). CTAs whose walks
    differ in length read, at one step, tiles offset by the difference of their starting ends: folding has a
    representative's read at each step stand for its siblings' reads at that step."""

    def __new__(cls, start: int, stop: int, step: int, descending: bool = False):
        return super().__new__(cls, (start, stop, step, descending))

    @property
    def step(self) -> int:
        return self[2]

    @property
    def descending(self) -> bool:
        return self[3]


class RegionKey(tuple):
    """A `shared_by` key that names tile regions by some of their index entries, wherever they sit:
    RegionKey({0: b, 1: h, 3: (r0, r1)}) for tiles [b, h, k-slice, rows] of a transposed operand. A plain
    key is the leading entries of the region index (K[b, kv_head, ...] and key (b, kv_head)). A range entry
    is a WalkedRange where CTAs walk it from different ends."""

    def __new__(cls, entries: Mapping[int, Hashable]):
        return super().__new__(cls, sorted(entries.items()))

    @classmethod
    def of_region(cls, ref) -> "RegionKey":
        """The key naming a whole region: for tiles one CTA owns (its rows of O, a partial output) that
        another launch reads back, so that a representative's siblings are the real tiles, not stand-ins."""
        return cls(dict(enumerate(ref.index)))


@dataclass(kw_only=True)
class Launch:
    """One kernel launch.

    `shared_by(cta)` maps a tensor name to a key; CTAs with equal keys read the same tiles of that
    tensor (e.g. every Q tile of one head reads that head's K and V). Folded simulation uses it to know
    how many distinct copies of a tile a representative CTA stands for, substituting another CTA's key
    into the representative's region index: the leading entries for a plain key, the named ones for a
    RegionKey. Tensors it does not name are private to each CTA.

    `owned_by(cta)` names, by RegionKey.of_region, the regions of tensors a CTA owns alone (its rows of Q
    and O, a partial output) when their real identity matters to folding: another launch reads them back
    from L2, or the last tile is partial. A folded representative then stands for its block's real tiles
    (computed only for the representatives simulated); unnamed private tiles get stand-in keys.

    `work(cta)` is a CTA's relative amount of work (e.g. the K/V tiles it visits); give it when CTAs
    differ (causal masking, ragged edges) so that folding only merges alike CTAs. None means uniform.
    """

    name: str
    grid: Sequence[Any]
    program: Callable[[Any], Any]
    smem_bytes_per_cta: int
    threads_per_cta: int
    registers_per_thread: int = 128
    shared_by: Callable[[Any], Mapping[str, Hashable]] = _no_sharing
    owned_by: Callable[[Any], Mapping[str, Hashable]] | None = None
    max_ctas_per_sm: int | None = None
    work: Callable[[Any], float] | None = None

    def occupancy(self, hw: HardwareSpec) -> int:
        """CTAs resident per SM, bounded by SMEM, registers, threads and the hardware CTA limit."""
        self.check_fits(hw)
        limits = [hw.max_ctas_per_sm, hw.max_threads_per_sm // self.threads_per_cta,
                  hw.registers_per_sm // (self.registers_per_thread * self.threads_per_cta)]
        if self.smem_bytes_per_cta:
            limits.append(hw.smem_per_sm_bytes // self.smem_bytes_per_cta)
        if self.max_ctas_per_sm:
            limits.append(self.max_ctas_per_sm)
        occupancy = min(limits)
        if occupancy < 1:
            raise InputError(f"launch {self.name}: {self.threads_per_cta} threads x {self.registers_per_thread} "
                             f"registers do not fit one SM of {hw.name}")
        return occupancy

    def check_fits(self, hw: HardwareSpec) -> None:
        if self.smem_bytes_per_cta > hw.smem_per_cta_max_bytes:
            raise DoesNotFitError(f"launch {self.name}: tiles need {self.smem_bytes_per_cta} bytes of shared memory per "
                             f"CTA; {hw.name} allows {hw.smem_per_cta_max_bytes} (smem_per_cta_max_bytes)")
        if self.threads_per_cta > 1024 or self.threads_per_cta <= 0:
            raise InputError(f"launch {self.name}: {self.threads_per_cta} threads per CTA (must be 1..1024)")
        if not len(self.grid):
            raise InputError(f"launch {self.name}: empty grid")


@dataclass(kw_only=True)
class KernelPlan:
    kernel: str
    tensors: dict[str, GlobalTensor]
    launches: list[Launch]
    info: dict = field(default_factory=dict)  # tile sizes, splits, ... reported in results

    def validate(self, hw: HardwareSpec) -> None:
        for launch in self.launches:
            launch.occupancy(hw)
        require_hbm(self.kernel, sum(t.nbytes for t in self.tensors.values()), hw)

    def outputs(self) -> list[str]:
        return [name for name, t in self.tensors.items() if t.kind == "output"]


def require_hbm(kernel: str, nbytes: float, hw: HardwareSpec) -> None:
    """DoesNotFitError when a kernel's tensors exceed HBM; kernels with huge scratch call it before they build
    their grids (which would otherwise cost memory in proportion to the impossible problem)."""
    if nbytes > hw.hbm_capacity_bytes:
        raise DoesNotFitError(f"{kernel}: its tensors need {nbytes / 1e9:,.1f} GB of HBM; {hw.name} has "
                              f"{hw.hbm_capacity_bytes / 1e9:,.1f} GB (hbm_capacity_bytes)")


@dataclass(frozen=True)
class Option:
    """A kernel option users set with --option KEY=VALUE or a scenario's [kernels.NAME] table."""

    kind: type
    default: Any
    help: str
    choices: tuple = ()

    def parse(self, kernel: str, key: str, raw) -> Any:
        value = raw
        if isinstance(raw, str):
            text = raw.strip()
            try:
                if self.kind is bool:
                    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    value = text.lower() in ("true", "1", "yes")
                elif self.kind is int:
                    value = int(text)
                elif self.kind is float:
                    value = float(text)
            except ValueError:
                raise InputError(f"kernel {kernel} option {key}: cannot read {raw!r} as {self.kind.__name__}") from None
        elif self.kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            value = float(raw)
        if value is not None and not isinstance(value, self.kind):
            raise InputError(f"kernel {kernel} option {key}: expected {self.kind.__name__}, got {raw!r}")
        if self.choices and value not in self.choices and not (value is None and self.default is None):
            raise InputError(f"kernel {kernel} option {key}={value!r}: choose from {', '.join(map(str, self.choices))}")
        return value


def resolve_options(kernel: str, schema: Mapping[str, Option], given: Mapping[str, Any] | None) -> dict:
    """Defaults overlaid with `given`; unknown keys and unreadable values are InputErrors."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(schema))
    if unknown:
        known = ", ".join(sorted(schema)) or "none"
        raise InputError(f"kernel {kernel}: unknown option {unknown[0]!r} (known: {known})")
    return {key: (opt.parse(kernel, key, given[key]) if key in given else opt.default) for key, opt in schema.items()}
