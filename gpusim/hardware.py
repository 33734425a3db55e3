"""Hardware specifications and presets.

A `HardwareSpec` is everything the timing model knows about a GPU. Every field carries its unit in its
name, every preset value says where it came from, and a hypothetical GPU is a preset plus overrides
(`with_overrides`). Derived figures (peak TFLOP/s, bytes per cycle) are properties, never stored twice.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields

from gpusim.errors import InputError

#: Tensor-core instruction classes the op API knows, oldest first.
INSTRUCTION_CLASSES = ("mma_sync", "wgmma", "tcgen05")
#: Classes issued asynchronously (the warp goes on while the tensor core works); mma.sync is synchronous.
ASYNC_INSTRUCTIONS = frozenset({"wgmma", "tcgen05"})
#: Element types the model knows, with their size in bytes.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1, "int4": 0.5}
#: Bytes of one SASS instruction (Volta onwards): what fetching one warp instruction moves.
INSTRUCTION_BYTES = 16


@dataclass(frozen=True, kw_only=True)
class HardwareSpec:
    """One GPU. All rates are per SM per SM clock unless the name says otherwise."""

    name: str
    description: str = ""
    # --- clocks and SMs
    sm_count: int
    sm_clock_hz: float
    # --- HBM
    hbm_capacity_bytes: int
    hbm_bandwidth_bytes_per_s: float
    hbm_achievable_fraction: float
    hbm_latency_cycles: int
    # --- L2
    l2_capacity_bytes: int
    l2_bandwidth_bytes_per_clk: float
    l2_hit_latency_cycles: int
    # --- per-SM memory path: memory-level parallelism and the L2->SM link
    sm_max_inflight_bytes: int
    sm_load_bandwidth_bytes_per_clk: float
    # --- shared memory, registers, occupancy
    smem_per_sm_bytes: int
    smem_per_cta_max_bytes: int
    smem_bandwidth_bytes_per_clk_per_sm: float
    #: the SM's unified L1 + shared-memory SRAM (the FlashAttention paper's M); 0: smem_per_sm_bytes
    sram_per_sm_bytes: int = 0
    tmem_per_sm_bytes: int = 0
    registers_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_ctas_per_sm: int = 32
    #: warp schedulers (SM sub-partitions) per SM: a CTA with a whole multiple of them in warps (8 on 4) has
    #: several warps on each scheduler, which take turns on it (TimingInterpreter._serial_operands)
    warp_schedulers_per_sm: int = 4
    # --- tensor cores: dense FLOPs per clock per SM by instruction class and operand type (0 = absent)
    mma_sync_bf16_flops_per_clk_per_sm: float = 0.0
    mma_sync_fp8_flops_per_clk_per_sm: float = 0.0
    wgmma_bf16_flops_per_clk_per_sm: float = 0.0
    wgmma_fp8_flops_per_clk_per_sm: float = 0.0
    tcgen05_bf16_flops_per_clk_per_sm: float = 0.0
    tcgen05_fp8_flops_per_clk_per_sm: float = 0.0
    tensor_sustained_fraction: float = 1.0
    #: synchronous mma.sync: the fraction of its rate a stream of them sustains (None: tensor_sustained_fraction),
    #: and whether its warps read the operands from SMEM (ldmatrix) before issuing, not overlapping the two within
    #: a warp (warps that share a scheduler overlap one's reads with another's MMAs: warp_schedulers_per_sm)
    mma_sync_sustained_fraction: float | None = None
    mma_sync_serial_operands: bool = False
    async_mma_latency_cycles: float = 0.0
    #: share of a contended SM unit (tensor pipe, SMEM port, dispatch, MUFU, FP32) that the oldest resident CTA's
    #: work gets while younger CTAs' work waits for it too (0.5 with two CTAs: plain processor sharing)
    oldest_cta_issue_share: float = 0.5
    # --- special-function (exp) and FP32 pipes
    mufu_ops_per_clk_per_sm: float = 16.0
    fp32_ops_per_clk_per_sm: float = 128.0
    # --- instruction fetch: the code the SM's instruction cache holds for every resident warp, and how fast it
    # fetches instructions once the code paths its warps run together outgrow it (a cache of 0 = no
    # instruction-fetch model: every kernel's code fits)
    instruction_cache_bytes: int = 0
    instruction_fetch_bytes_per_clk_per_sm: float = 0.0
    #: what a stream of straight-line code run once (a prologue) holds of that cache while it is prefetched
    instruction_stream_window_bytes: int = 0
    # --- Ampere-style asynchronous copies (cp.async, global -> shared without registers): their own in-flight
    # window and link per SM, measured apart from register loads (0 = they share the load/store units' path)
    async_copy_max_inflight_bytes: int = 0
    async_copy_bandwidth_bytes_per_clk: float = 0.0
    #: what the path adds to the access latency of a cp.async read that hits in L2 / that misses to HBM
    async_copy_hit_extra_latency_cycles: float = 0.0
    async_copy_miss_extra_latency_cycles: float = 0.0
    #: share of the bytes a cp.async fill lands in SMEM that takes SMEM port cycles from the products reading it
    #: meanwhile (1: every fill byte, as an operand read would; 0: none)
    async_copy_fill_smem_port_share: float = 1.0
    # --- asynchronous bulk copy engine (TMA): its own in-flight window and link per SM (0 = no TMA)
    has_tma: bool = False
    tma_max_inflight_bytes: int = 0
    tma_bandwidth_bytes_per_clk: float = 0.0
    # --- board power: the clock the power cap allows under sustained load (engine.power; 0 = no cap modelled,
    # the SMs run at sm_clock_hz). Powers are at sm_clock_hz with every SM busy; they scale with the clock cubed.
    power_limit_w: float = 0.0
    static_power_w: float = 0.0
    sm_active_power_w: float = 0.0  # all SMs clocked, no unit busy
    tensor_power_w: float = 0.0  # added by every SM's tensor cores at the GPU's peak dense bf16 FLOP rate
    smem_power_w: float = 0.0  # added by every SM's shared memory at its full bandwidth
    hbm_energy_pj_per_byte: float = 0.0  # HBM traffic, with the L2 and crossbar traffic that carries it
    # --- launches
    kernel_launch_overhead_s: float = 4e-6
    #: how fast the CTAs of a long launch drift out of step (a random walk of 2 x this x sqrt(waves) CTA durations,
    #: at most one): a shared K/V stream is re-read from DRAM once their spread outgrows the L2 (engine
    #: steady_state.Drift). Fitted per GPU, though how far a launch drifts is really its kernel's (runs 31-32)
    cta_duration_jitter: float = 0.0
    #: the std over the mean of the paces of CTAs of alike work (engine folding): a folded block's other CTAs walk
    #: their own ranges (a causal walk) each at its own pace, so their reads drift from the representative's
    cta_pace_spread: float = 0.0
    #: std of the LRU depth at which a tile leaves the L2, over l2_capacity_bytes (engine l2): sets and partitions
    #: make the capacity edge gradual, a normal CDF around the capacity; 0 is one LRU edge
    l2_capacity_spread_fraction: float = 0.0
    #: the L2 room a line only one SM has used takes, over its bytes (engine l2): l2_capacity_bytes is that of data
    #: every SM reads, which a GPU whose L2 is two partitions holds in both; a line one SM uses fills one
    l2_private_line_share: float = 1.0
    #: the share of lines whose home is the L2 partition away from the SM that asks (engine memory): a lookup that
    #: misses beside its SM is forwarded there and looked up again, as Nsight Compute's lts__t_bytes counts it
    #: (Result.l2_tag_bytes); 0 for an L2 of one partition
    l2_far_home_share: float = 0.0
    #: the L2 picks victims by tree pseudo-LRU rather than true LRU (engine l2 L2Cache._victim_rank): a hit on an older
    #: line scatters the tree's bits, and the fills that follow evict lines younger than the least recent
    l2_tree_pseudo_lru: bool = False
    # --- the L2 a benchmark leaves behind (simulate's l2_start="flushed"): do_bench clears L2 between repeats by
    # zeroing a buffer larger than it, which leaves the L2 full of that buffer's dirty lines. A kernel's first
    # misses evict them: `flushed_l2_writeback_per_byte` bytes written to HBM per byte it allocates in L2, until
    # `flushed_l2_dirty_fraction` of the L2 capacity has been written back.
    flushed_l2_dirty_fraction: float = 0.0
    flushed_l2_writeback_per_byte: float = 0.0
    # --- host link (KV offload)
    pcie_bandwidth_bytes_per_s: float = 55e9
    pcie_latency_s: float = 2e-6
    sources: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value < 0:
                raise InputError(f"hardware field {f.name}={value}: must not be negative")
        for name in ("sm_count", "sm_clock_hz", "hbm_bandwidth_bytes_per_s", "l2_bandwidth_bytes_per_clk",
                     "sm_max_inflight_bytes", "sm_load_bandwidth_bytes_per_clk", "smem_per_sm_bytes",
                     "smem_bandwidth_bytes_per_clk_per_sm", "mufu_ops_per_clk_per_sm", "fp32_ops_per_clk_per_sm",
                     "max_ctas_per_sm", "max_threads_per_sm", "registers_per_sm", "warp_schedulers_per_sm"):
            if getattr(self, name) <= 0:
                raise InputError(f"hardware field {name}={getattr(self, name)}: must be positive")
        if not isinstance(self.warp_schedulers_per_sm, int):
            raise InputError(f"hardware field warp_schedulers_per_sm={self.warp_schedulers_per_sm}: must be a whole "
                             f"number")
        for name in ("hbm_achievable_fraction", "tensor_sustained_fraction", "mma_sync_sustained_fraction",
                     "oldest_cta_issue_share"):
            if getattr(self, name) is not None and not 0 < getattr(self, name) <= 1:
                raise InputError(f"hardware field {name}={getattr(self, name)}: must be in (0, 1]")
        if self.has_tma and (self.tma_max_inflight_bytes <= 0 or self.tma_bandwidth_bytes_per_clk <= 0):
            raise InputError("hardware fields tma_max_inflight_bytes and tma_bandwidth_bytes_per_clk: must be "
                             "positive when has_tma is true")
        own_path = self.async_copy_max_inflight_bytes > 0
        if own_path != (self.async_copy_bandwidth_bytes_per_clk > 0) or not own_path and (
                self.async_copy_hit_extra_latency_cycles or self.async_copy_miss_extra_latency_cycles):
            raise InputError("hardware fields async_copy_*: set the window and bandwidth both (cp.async has its own "
                             "path, and may add latency) or none of them (it shares the load/store units')")
        if self.instruction_cache_bytes > 0 and self.instruction_fetch_bytes_per_clk_per_sm <= 0:
            raise InputError(f"hardware field instruction_fetch_bytes_per_clk_per_sm="
                             f"{self.instruction_fetch_bytes_per_clk_per_sm}: must be positive with an instruction cache "
                             f"(instruction_cache_bytes={self.instruction_cache_bytes}; 0 turns the model off)")
        if self.instruction_cache_bytes > 0 and not \
                0 < self.instruction_stream_window_bytes <= self.instruction_cache_bytes:
            raise InputError(f"hardware field instruction_stream_window_bytes={self.instruction_stream_window_bytes}: "
                             f"must be positive and at most instruction_cache_bytes ({self.instruction_cache_bytes})")
        if not 0.0 <= self.async_copy_fill_smem_port_share <= 1.0:
            raise InputError(f"hardware field async_copy_fill_smem_port_share={self.async_copy_fill_smem_port_share}: "
                             "must be in [0, 1]")
        if not 0.0 < self.l2_private_line_share <= 1.0:
            raise InputError(f"hardware field l2_private_line_share={self.l2_private_line_share}: must be in (0, 1] "
                             "(a line one SM uses takes at most a shared line's room)")
        if self.l2_capacity_spread_fraction > 0.5:
            raise InputError(f"hardware field l2_capacity_spread_fraction={self.l2_capacity_spread_fraction}: must be "
                             "at most 0.5 (an edge wider than half the capacity is no capacity)")
        for name in ("flushed_l2_dirty_fraction", "flushed_l2_writeback_per_byte", "l2_far_home_share"):
            if getattr(self, name) > 1.0:
                raise InputError(f"hardware field {name}={getattr(self, name)}: must be in [0, 1]")
        if self.smem_per_cta_max_bytes > self.smem_per_sm_bytes:
            raise InputError("hardware field smem_per_cta_max_bytes: exceeds smem_per_sm_bytes")
        if not any(self.tensor_flops_per_clk(i, "bf16") for i in INSTRUCTION_CLASSES):
            raise InputError(f"hardware {self.name}: no tensor-core instruction class has a bf16 rate")

    # ------------------------------------------------------------------ derived figures
    @property
    def hbm_bytes_per_clk(self) -> float:
        """Achievable HBM bandwidth in bytes per SM clock, shared by all SMs."""
        return self.hbm_bandwidth_bytes_per_s * self.hbm_achievable_fraction / self.sm_clock_hz

    @property
    def seconds_per_cycle(self) -> float:
        return 1.0 / self.sm_clock_hz

    def tensor_flops_per_clk(self, instruction: str, dtype: str) -> float:
        """Dense tensor-core FLOPs per clock per SM; 0 when the GPU lacks that instruction or type."""
        if instruction not in INSTRUCTION_CLASSES:
            raise InputError(f"unknown tensor instruction class {instruction!r}; known: {', '.join(INSTRUCTION_CLASSES)}")
        kind = "fp8" if dtype.startswith("fp8") or dtype == "int8" else "bf16"
        return float(getattr(self, f"{instruction}_{kind}_flops_per_clk_per_sm"))

    def best_instruction(self, dtype: str = "bf16") -> str:
        """The newest instruction class this GPU has for `dtype` (what a tuned kernel would use)."""
        for instruction in reversed(INSTRUCTION_CLASSES):
            if self.tensor_flops_per_clk(instruction, dtype) > 0:
                return instruction
        raise InputError(f"hardware {self.name}: no tensor-core instruction for dtype {dtype}")

    def peak_tensor_flops_per_s(self, dtype: str = "bf16", instruction: str | None = None) -> float:
        instruction = instruction or self.best_instruction(dtype)
        return self.tensor_flops_per_clk(instruction, dtype) * self.sm_count * self.sm_clock_hz

    @property
    def peak_mufu_ops_per_s(self) -> float:
        return self.mufu_ops_per_clk_per_sm * self.sm_count * self.sm_clock_hz

    @property
    def l2_bandwidth_bytes_per_s(self) -> float:
        return self.l2_bandwidth_bytes_per_clk * self.sm_clock_hz

    @property
    def smem_bandwidth_bytes_per_s(self) -> float:
        return self.smem_bandwidth_bytes_per_clk_per_sm * self.sm_count * self.sm_clock_hz

    # ------------------------------------------------------------------ overrides
    def with_overrides(self, overrides: dict, origin: str = "--set") -> "HardwareSpec":
        """A copy with some fields replaced; values may be strings (from the CLI) and are coerced."""
        if not overrides:
            return self
        known = {f.name: f for f in fields(self) if f.name != "sources"}
        changes = {}
        for key, raw in overrides.items():
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean {hint[0]}?)" if hint else ""
                raise InputError(f"{origin}: unknown hardware field {key!r}{extra}")
            current = getattr(self, key)
            changes[key] = _coerce(key, raw, float if current is None else type(current), origin)
        sources = dict(self.sources)
        for key in changes:
            sources[key] = f"override ({origin})"
        name = changes.pop("name", None) or f"{self.name}*"
        try:
            return dataclasses.replace(self, name=name, sources=sources, **changes)
        except InputError as exc:  # an impossible value: say where it came from
            raise InputError(f"{origin}: {exc}") from None

    def as_rows(self) -> list[tuple[str, object, str]]:
        """(field, value, source) for every field, in declaration order."""
        rows = []
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            source = self.sources.get(f.name) or ("absent on this GPU" if value in (0, 0.0, False) else "")
            rows.append((f.name, value, source))
        return rows


def _coerce(key: str, raw, kind: type, origin: str):
    if not isinstance(raw, str):
        if kind is bool and not isinstance(raw, bool):
            raise InputError(f"{origin}: hardware field {key}: expected true or false, got {raw!r}")
        if kind in (int, float) and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
            raise InputError(f"{origin}: hardware field {key}: expected a number, got {raw!r}")
        return kind(raw) if kind in (int, float) else raw
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
    except ValueError:
        raise InputError(f"{origin}: hardware field {key}: cannot read {raw!r} as {kind.__name__}") from None
    return text


# ---------------------------------------------------------------------------------------------- presets
_ANCHORS = "anchors.md hardware table (vendor data)"
_CALIB = "validation/data/h200_calibration_reference.json (measured on an H200)"
_FA3_T1 = "FlashAttention-3 paper Table 1"
_INFLIGHT = ("calibrated: per-SM bytes in flight so that bandwidth(k SMs) = k * inflight / latency matches "
             "validation copy_vs_sms; Little's law")

_CP_ASYNC = ("validation/probe_cp_async_window.py on the H200 (README runs 17-18; the H100 inherits it): one "
             "CTA alone on the GPU, rounds of 16-byte cp.async.cg, each waited for before the next")

_ICACHE = ("validation/probe_icache.py on the H200 (README runs 23 and 36; the H100 inherits it): straight-line FFMA "
           "bodies run in a loop by two warpgroups per SM, both the same body or each its own")

_HOPPER_COMMON = dict(
    smem_per_sm_bytes=233472, smem_per_cta_max_bytes=232448, sram_per_sm_bytes=262144,
    smem_bandwidth_bytes_per_clk_per_sm=128.0,
    wgmma_bf16_flops_per_clk_per_sm=4096.0, wgmma_fp8_flops_per_clk_per_sm=8192.0,
    mma_sync_bf16_flops_per_clk_per_sm=2731.0, mma_sync_fp8_flops_per_clk_per_sm=0.0,
    mma_sync_sustained_fraction=1.0, mma_sync_serial_operands=True,
    mufu_ops_per_clk_per_sm=16.0, fp32_ops_per_clk_per_sm=128.0,
    has_tma=True, tma_max_inflight_bytes=131072, tma_bandwidth_bytes_per_clk=128.0,
    async_mma_latency_cycles=256.0,
    l2_hit_latency_cycles=289, hbm_latency_cycles=700,
    sm_max_inflight_bytes=49152, sm_load_bandwidth_bytes_per_clk=40.0,
    async_copy_max_inflight_bytes=196608, async_copy_bandwidth_bytes_per_clk=53.0,
    async_copy_hit_extra_latency_cycles=158.0, async_copy_miss_extra_latency_cycles=440.0,
    async_copy_fill_smem_port_share=0.0,
    instruction_cache_bytes=32768, instruction_fetch_bytes_per_clk_per_sm=32.0, instruction_stream_window_bytes=16384,
    pcie_bandwidth_bytes_per_s=55e9,
)
_HOPPER_SOURCES = {
    "smem_per_sm_bytes": _ANCHORS, "smem_per_cta_max_bytes": "CUDA programming guide: 227 KiB per block on sm_90",
    "sram_per_sm_bytes": "Hopper tuning guide: 256 KB combined L1 / shared memory per SM",
    "smem_bandwidth_bytes_per_clk_per_sm": _FA3_T1,
    "wgmma_bf16_flops_per_clk_per_sm": "989 TFLOP/s / (132 SMs * 1.83 GHz), anchors.md",
    "wgmma_fp8_flops_per_clk_per_sm": "1979 TFLOP/s / (132 SMs * 1.83 GHz), anchors.md",
    "mma_sync_bf16_flops_per_clk_per_sm": "ncu on the H200 (validation/README.md run 7): every HMMA.16816 (4096 "
                                          "FLOPs) keeps its sub-partition's tensor pipe busy 6.0 cycles, 4 x 4096 / 6",
    "mma_sync_sustained_fraction": "run 7: the pipe time per HMMA is exact in all five FA2 kernels profiled",
    "mma_sync_serial_operands": "run 7: FA2's kernel time is close to tensor-pipe plus SMEM time (0.87-0.94), not "
                                "their maximum; ldmatrix waits are 25% of warp cycles in the backward (within a "
                                "warp; the backward's two warps per scheduler overlap in turns, run 38)",
    "mufu_ops_per_clk_per_sm": _ANCHORS, "fp32_ops_per_clk_per_sm": "128 FP32 lanes per SM (67 TFLOP/s FP32)",
    "l2_hit_latency_cycles": "probe on the H200 (validation/README.md run 22): one thread's dependent ld.global.cg "
                             "over 1-16 MiB in random 128-byte lines, 289 cycles per load (Luo et al. 2024, arXiv "
                             "2402.13499: ~260 on the H800)",
    "hbm_latency_cycles": "validation copy_vs_sms: one SM, synchronous 4-16 KiB loads take 730 + bytes/40 cycles "
                          "(Luo et al. pointer chase 480-570 plus issue and store)",
    "sm_max_inflight_bytes": _INFLIGHT + " (64 KiB blocks saturate at 49 GB/s read per SM)",
    "sm_load_bandwidth_bytes_per_clk": "validation copy_vs_sms: 40 B/clk per SM for LSU loads (slope of time vs block)",
    "async_copy_max_inflight_bytes": _CP_ASYNC + ": a round's time grows linearly with its bytes up to 192 KiB, the "
                                     "largest probed, so the window is at least rate x latency (~60 KiB) and does "
                                     "not bind; register loads saturate at 49 GB/s per SM",
    "async_copy_bandwidth_bytes_per_clk": _CP_ASYNC + ": 9.8 ns per KiB of a round from 8 to 192 KiB, from L2 and from "
                                          "DRAM alike: 105 GB/s = 53 B/clk at 1.98 GHz (one CTA of 4 warps)",
    "async_copy_hit_extra_latency_cycles": _CP_ASYNC + ", re-reading what L2 holds: rounds take 0.226 us + bytes / "
                                           "link (447 cycles at 1.98 GHz), 158 more than l2_hit_latency_cycles",
    "async_copy_miss_extra_latency_cycles": _CP_ASYNC + ", after an L2 flush: rounds take 0.22-0.23 us (440 cycles) "
                                            "longer than hbm_latency_cycles + bytes / link (copy_vs_sms fitted that "
                                            "latency on register loads)",
    "async_copy_fill_smem_port_share": "ncu on the H200 (validation/README.md run 15, SMEM wavefronts): FA2's "
                                       "forward at N = 8192 uses 1217 / 1343 / 2365 shared-memory wavefronts per K/V "
                                       "tile at d = 64 / 128 / 256, its ldmatrix reads plus 5-8%, not the cp.async "
                                       "fills of K and V on top (1.2-1.35x)",
    "instruction_cache_bytes": _ICACHE + ": two different bodies of 16 KiB issue at 1.06 cycles per instruction, "
                               "of 20-32 KiB at 2.02-2.28; one body of up to 32 KiB at full rate",
    "instruction_fetch_bytes_per_clk_per_sm": _ICACHE + ": two bodies past the cache, one warp each per "
                                              "sub-partition, issue one instruction (16 B) per 2.02-2.04 cycles "
                                              "per sub-partition in run 23 and the first of run 36's calls, 2.27-2.28 "
                                              "in the second: 7.0-7.9 B/clk each; 8 (32 per SM) taken",
    "instruction_stream_window_bytes": _ICACHE + ": one warpgroup loops over a body while the other streams through "
                                       "a longer one; a 16 KiB loop beside a 64 or 128 KiB stream keeps its rate "
                                       "(2.11 cycles per warp instruction, two warps per sub-partition), a 24 KiB "
                                       "one thrashes beside a 48 or 96 KiB stream (4.5): between 8 and 16 KiB",
    "has_tma": "Hopper has the Tensor Memory Accelerator (FA3 paper Sec. 2)",
    "async_mma_latency_cycles": "calibrated on the H200 cudnn rows: an asynchronous MMA group (wgmma "
                                "commit/wait) completes this long after the tensor core finishes its FLOPs; "
                                "a dependent chain (S -> softmax -> PV) pays it, a pipelined GEMM hides it. "
                                "Explains why d=64 attention (twice the groups per FLOP) falls further below peak",
    "tma_max_inflight_bytes": "assumed: bulk copies complete on mbarrier transaction counts, not per-thread MSHRs; "
                              "sized so a 3-4 stage pipeline of 32-48 KiB tiles is not window-limited",
    "tma_bandwidth_bytes_per_clk": "assumed: 128 B/clk per SM, the SMEM write width",
    "pcie_bandwidth_bytes_per_s": "PCIe Gen5 x16, ~55 GB/s achievable per direction",
}

PRESETS: dict[str, HardwareSpec] = {}

_POWER_FIT = ("fitted (least squares) to run 15's eight sustained workloads (FA2 and cuDNN forward, FA2 decode, "
              "GEMM, copy; validation/README.md): the effective clocks they held at the cap, from the model's "
              "activity per cycle; the fitted power model puts each clock within 2.5%")

#: Sources of the fields every preset shares (CUDA programming guide, compute capability tables).
_COMMON_SOURCES = {
    "registers_per_sm": "CUDA programming guide: 64K 32-bit registers per SM (sm_80, sm_90, sm_100)",
    "max_threads_per_sm": "CUDA programming guide: 2048 resident threads per SM",
    "max_ctas_per_sm": "CUDA programming guide: 32 resident blocks per SM",
    "warp_schedulers_per_sm": "NVIDIA architecture whitepapers (Volta to Blackwell): four sub-partitions per SM, "
                              "each with its own warp scheduler and tensor core",
    "pcie_latency_s": "typical PCIe round trip for a DMA of one page (~2 us)",
    "async_copy_fill_smem_port_share": "assumed (not measured on this GPU): every cp.async fill byte takes the "
                                       "SMEM port as an operand read would",
    "kernel_launch_overhead_s": "CUDA launch gap between back-to-back kernels; small decode rows of the "
                                "H200 calibration data (assumed the same on every preset)",
}


#: How fast a long launch's CTAs drift out of step (see HardwareSpec.cta_duration_jitter), calibrated on the H200.
CTA_DURATION_JITTER = 0.08
_JITTER_SOURCE = ("calibrated: DRAM reads of FA2 and cuDNN forward at d = 128, 98k and 128k tokens, 16 heads, median "
                  "of 7-8 profiled calls each (validation/README.md run 28), where drift sets the re-reads, with the "
                  "band capped at one CTA (thirteenth session). Refitted once the extrapolation counted the K/V walks "
                  "of waves that straddle two heads (thirty-first session): +7 / +14% (FA2) and +1 / -1% (cuDNN); "
                  "0.11 leaves them +15 / +23% and +7 / +4%, 0.05 +6 / +8% and -17 / -17%. Not a property of the GPU "
                  "alone: a FlashAttention kernel written in Triton drifts not at all (run 32)")


#: How much the paces of alike CTAs differ (HardwareSpec.cta_pace_spread), measured on the H200.
CTA_PACE_SPREAD = 0.063
_PACE_SPREAD_SOURCE = ("run 45: a Triton causal forward of FA2's shape, 4 heads, 32k tokens, d = 128: the std over the mean "
                       "of the paces (time per K/V step) of the CTAs of one query block across heads, 0.063; run 55: "
                       "0.034-0.068 (wgmma) and 0.040-0.078 (mma.sync) at 4-16 heads (validation/probe_fa_phases.py "
                       "pace_spread). The model's exact mode has 0.065 of its own (twenty-first session)")


#: Share of a contended SM unit the oldest resident CTA gets (HardwareSpec.oldest_cta_issue_share): NVIDIA's
#: warp schedulers favour older warps (greedy-then-oldest, as GPGPU-Sim models them) but yield when those stall, so
#: equal CTAs that share an SM share it almost evenly (run 30). Just over one half: the model's ops are whole tiles,
#: and at exactly 0.5 two CTAs that start in the same cycle stay in the same phase, where all their ops contend
#: (FA2 at d = 128: 7312 cycles per iteration against 4752-5632 at offsets of 0.14-0.5 iterations), a trap the
#: GPU's instruction-level interleaving does not fall into; the older CTA's small edge breaks such ties.
OLDEST_CTA_ISSUE_SHARE = 0.51
_OLDEST_SHARE_SOURCE = ("equal CTAs that share an H200 SM end 0.03 us apart (run 30) and hold their dispatch offset "
                        "(run 33): fair sharing, but exactly 0.5 leaves the model's tied pairs in lockstep, and SMs "
                        "whose pairs settle at different offsets run FA2 at different speeds, so that a long forward's "
                        "CTAs fall out of step across SMs (K/V re-reads at one head of 128k tokens, d = 128: +141%; "
                        "sixteenth session, validation/README.md). "
                        "0.51 breaks ties; its pairs slide through each other's phases by about 2% of a CTA per "
                        "CTA (0.6, the value before, by about 20%). Against 0.6: FA2's Nsight Compute cycles at two "
                        "CTAs per SM (run 37) +7 to +10% -> +3 to +5%; K/V re-reads at one head of 128k tokens, "
                        "d = 128, +47% -> -3%; the decode kernels' cycles (h200_ncu_cycles, median) 12% -> 17% under. "
                        "0.505 gives the same picture")


#: The L2 after do_bench's flush (HardwareSpec.flushed_l2_*), measured on the H200 (validation/README.md run 25).
FLUSHED_L2_DIRTY_FRACTION = 0.94
FLUSHED_L2_WRITEBACK_PER_BYTE = 0.35
_FLUSHED_SOURCE = ("Nsight Compute with --cache-control none after zeroing a 256 MB buffer (validation/"
                   "probe_dirty_l2.py, run 25): reads of 128 and 256 MB write back 28.5 and 28.8 MB (0.94 of the "
                   "modelled 29.2 MiB L2); reads of 33.6, 33.7 and 67.2 MB write back 10.4, 11.6 and 24.8 MB "
                   "(0.31-0.37 per byte read)")


#: Values measured on the H200 that every preset takes unless it sets its own: field -> (value, the H200's source,
#: what the other presets' source says).
_MEASURED_ON_H200 = {
    "oldest_cta_issue_share": (OLDEST_CTA_ISSUE_SHARE, _OLDEST_SHARE_SOURCE,
                               "as h200 (the same scheduler family; not measured on this GPU)"),
    "flushed_l2_dirty_fraction": (FLUSHED_L2_DIRTY_FRACTION, _FLUSHED_SOURCE,
                                  "as h200 (the same flush; not measured on this GPU)"),
    "flushed_l2_writeback_per_byte": (FLUSHED_L2_WRITEBACK_PER_BYTE, _FLUSHED_SOURCE,
                                      "as h200 (the same flush; not measured on this GPU)"),
    "cta_duration_jitter": (CTA_DURATION_JITTER, _JITTER_SOURCE, "as h200 (not measured on this GPU)"),
    "cta_pace_spread": (CTA_PACE_SPREAD, _PACE_SPREAD_SOURCE, "as h200 (not measured on this GPU)"),
}


def _preset(**kwargs) -> None:
    kwargs["sources"] = {**_COMMON_SOURCES, **kwargs.get("sources", {})}
    for name, (value, h200_source, other_source) in _MEASURED_ON_H200.items():
        kwargs.setdefault(name, value)
        kwargs["sources"].setdefault(name, h200_source if kwargs["name"] == "h200" else other_source)
    spec = HardwareSpec(**kwargs)
    PRESETS[spec.name] = spec


_preset(
    name="h200", description="NVIDIA H200 SXM 141GB (Hopper), clocks as found on the calibration machine",
    sm_count=132, sm_clock_hz=1.98e9,
    hbm_capacity_bytes=141 * 10**9, hbm_bandwidth_bytes_per_s=4.8e12, hbm_achievable_fraction=0.885,
    l2_capacity_bytes=30618419, l2_capacity_spread_fraction=0.106, l2_private_line_share=0.63,
    l2_far_home_share=0.5, l2_tree_pseudo_lru=True, l2_bandwidth_bytes_per_clk=6144.0,
    tensor_sustained_fraction=0.93, kernel_launch_overhead_s=4e-6,
    power_limit_w=690.0, static_power_w=100.0, sm_active_power_w=207.5, tensor_power_w=1528.0,
    smem_power_w=193.0, hbm_energy_pj_per_byte=74.6,
    **_HOPPER_COMMON,
    sources={**_HOPPER_SOURCES,
             "sm_count": _ANCHORS, "sm_clock_hz": "reference README: 1980 MHz as found (the boost clock; under "
                                                  "sustained load the power cap lowers it, see power_limit_w)",
             "power_limit_w": "validation/README.md run 15: every capped workload held 690-693 W (median), "
                              "throttle reason 0x4 (SW power cap) at the 700 W limit",
             "static_power_w": "assumed: an idle H200's board power (not measured here)",
             **{name: _POWER_FIT for name in ("sm_active_power_w", "tensor_power_w", "smem_power_w",
                                              "hbm_energy_pj_per_byte")},
             "hbm_capacity_bytes": _ANCHORS, "hbm_bandwidth_bytes_per_s": _ANCHORS,
             "hbm_achievable_fraction": f"copy 4.25 TB/s read+write over 4.8 TB/s, {_CALIB}",
             "l2_capacity_bytes": "29.2 MiB, about one partition of the driver-reported 60 MiB: Hopper's L2 is two "
                                  "partitions and data read by SMs on both sides is held in both, so tiles shared "
                                  "by all SMs see half. Measured (validation/probe_l2_policy.py, run 26): of a data "
                                  "set every SM re-reads, 0 / 35 / 82 / 100% misses at 24 / 28 / 32 / 40 MiB, a "
                                  "normal CDF of mean 29.2 MiB and std 3.1 MiB (private data about 46 MiB)",
             "l2_capacity_spread_fraction": "3.1 / 29.2 MiB: the std of the same fit to run 26",
             "l2_private_line_share": "29.2 / 46.4 MiB: run 26's private data, each byte read by one SM, misses "
                                      "0.20 / 0.69 at 44 / 48 MiB (half at about 46.4) where shared data misses half "
                                      "at 29.2. Checked on runs 50-51 (validation/model_l2_shared_side.py): a shared "
                                      "stream against Q and O side traffic, summed |model - GPU| 0.98 over 20 cells "
                                      "(every line at full room: 2.68)",
             "l2_far_home_share": "validation/probe_l2_traffic.py (run 56): a 256 MiB stream each line of which one "
                                  "SM reads (or writes) once is looked up 1.50 times at the L2's tag stage, 0.50 of "
                                  "it from the other partition (srcunit_ltcfabric); so are the decode rows' K/V",
             "l2_tree_pseudo_lru": "runs 58, 60, 63-64: causal walks read K/V 1.4-2.7 times per head where an "
                                   "LRU of the L2's size reads 1.0-1.4, more so with Q/O traffic; a line-level 16-way "
                                   "tree pseudo-LRU replays them within 0.03-0.26 (validation/replay_l2_lines.py); "
                                   "victims' ranks: validation/plru_victim_ranks.py",
             "l2_bandwidth_bytes_per_clk": "FA3 paper Table 1: L2 12 TB/s on H100 SXM5 (6144 B/clk at 1.98 GHz)",
             "tensor_sustained_fraction": "run 15: cuBLAS 8192^3 bf16 at 665 TFLOP/s while its effective clock was "
                                          "1.32 GHz (0.9 x the 1.47 GHz nvidia-smi reported; ncu cycles over "
                                          "event times give 0.88-0.91): 93% of the wgmma peak per cycle",
             "kernel_launch_overhead_s": "CUDA launch gap; small decode rows of the calibration data"},
)
_preset(
    name="h100", description="NVIDIA H100 SXM5 80GB (Hopper)",
    sm_count=132, sm_clock_hz=1.83e9,
    hbm_capacity_bytes=80 * 10**9, hbm_bandwidth_bytes_per_s=3.35e12, hbm_achievable_fraction=0.90,
    l2_capacity_bytes=25 * 2**20, l2_private_line_share=0.63, l2_far_home_share=0.5,
    l2_bandwidth_bytes_per_clk=6144.0,
    tensor_sustained_fraction=0.80, kernel_launch_overhead_s=4e-6,
    **_HOPPER_COMMON,
    sources={**_HOPPER_SOURCES,
             "sm_count": _ANCHORS, "sm_clock_hz": "tensor peak basis 1830 MHz, anchors.md",
             "hbm_capacity_bytes": _ANCHORS, "hbm_bandwidth_bytes_per_s": _FA3_T1,
             "hbm_achievable_fraction": "achieved DRAM bandwidth 90-92% of theoretical, anchors.md",
             "l2_capacity_bytes": "one of the two 25 MiB partitions of the 50 MiB L2 (FA3 paper Table 1), as h200",
             "l2_private_line_share": "as h200 (the same two-partition L2)",
             "l2_far_home_share": "as h200 (the same two-partition L2)",
             "l2_bandwidth_bytes_per_clk": "as h200",
             "tensor_sustained_fraction": "FA3 paper: cuBLAS-class GEMMs sustain ~800 of 989 TFLOP/s on H100 SXM",
             "kernel_launch_overhead_s": "as h200"},
)
_preset(
    name="a100", description="NVIDIA A100 SXM4 80GB (Ampere)",
    sm_count=108, sm_clock_hz=1.41e9,
    hbm_capacity_bytes=80 * 10**9, hbm_bandwidth_bytes_per_s=2.039e12, hbm_achievable_fraction=0.90,
    hbm_latency_cycles=480, l2_capacity_bytes=40 * 10**6, l2_bandwidth_bytes_per_clk=5120.0,
    l2_hit_latency_cycles=200, sm_max_inflight_bytes=32768, sm_load_bandwidth_bytes_per_clk=64.0,
    smem_per_sm_bytes=167936, smem_per_cta_max_bytes=166912, smem_bandwidth_bytes_per_clk_per_sm=128.0,
    sram_per_sm_bytes=196608,
    mma_sync_bf16_flops_per_clk_per_sm=2048.0, tensor_sustained_fraction=0.85,
    mufu_ops_per_clk_per_sm=16.0, fp32_ops_per_clk_per_sm=64.0, has_tma=False,
    kernel_launch_overhead_s=4e-6, pcie_bandwidth_bytes_per_s=26e9,
    sources={"sm_count": _ANCHORS, "sm_clock_hz": _ANCHORS, "hbm_capacity_bytes": _ANCHORS,
             "hbm_bandwidth_bytes_per_s": _ANCHORS, "hbm_achievable_fraction": "90-92% achieved, anchors.md",
             "hbm_latency_cycles": "Jia et al. 2021 A100 microbenchmarks (~290 ns + L2)",
             "l2_capacity_bytes": _ANCHORS, "l2_bandwidth_bytes_per_clk": "Ampere whitepaper: 5120 B/clk L2 read bandwidth (2.3x V100)",
             "l2_hit_latency_cycles": "Jia et al. 2021", "sm_max_inflight_bytes": _INFLIGHT + " (h200 value scaled)",
             "sm_load_bandwidth_bytes_per_clk": "64 B/clk per SM",
             "smem_per_sm_bytes": _ANCHORS, "smem_per_cta_max_bytes": "CUDA programming guide: 163 KiB per block on sm_80",
             "sram_per_sm_bytes": "anchors.md: 192 KB SRAM per SM (combined L1 / shared memory)",
             "smem_bandwidth_bytes_per_clk_per_sm": "128 B/clk/SM (FlashAttention paper: ~19 TB/s on 108 SMs)",
             "mma_sync_bf16_flops_per_clk_per_sm": "312 TFLOP/s / (108 * 1.41 GHz), anchors.md",
             "tensor_sustained_fraction": "cuBLAS reaches ~265 of 312 TFLOP/s on A100",
             "mufu_ops_per_clk_per_sm": _ANCHORS, "fp32_ops_per_clk_per_sm": "64 FP32 lanes per SM (19.5 TFLOP/s)",
             "pcie_bandwidth_bytes_per_s": "PCIe Gen4 x16, ~26 GB/s achievable",
             "has_tma": "Ampere has cp.async but no TMA (anchors.md)"},
)
#: The A100 the FlashAttention paper (Dao et al. 2022, arXiv 2205.14135, Sec. 4.3 / App. E) ran on: "one A100
#: GPU with 40 GB HBM", the SXM4 40GB part. Same GA100 die and clocks as `a100` (108 SMs, 1410 MHz boost, 40 MB
#: L2, 164 KB SMEM per SM); HBM2 at 1215 MHz on a 5120-bit bus = 1555 GB/s instead of the 80GB part's HBM2e
#: 2039 GB/s (NVIDIA A100 datasheet, "GPU memory bandwidth: 1,555 GB/s" for A100 40GB SXM; A100 Tensor Core GPU
#: Architecture whitepaper, Table 3).
_A100_40GB_CHANGES = dict(hbm_capacity_bytes=40 * 10**9, hbm_bandwidth_bytes_per_s=1.555e12)
_A100_40GB_SOURCES = {
    "hbm_capacity_bytes": "NVIDIA A100 datasheet: 40 GB HBM2 (SXM4 40GB)",
    "hbm_bandwidth_bytes_per_s": "NVIDIA A100 datasheet: 1,555 GB/s (A100 40GB); A100 whitepaper Table 3 "
                                 "(5120-bit HBM2 at 1215 MHz)",
    "hbm_achievable_fraction": "as a100 (90-92% achieved on HBM2e; not measured on the HBM2 part)",
}
_preset(**{**{f.name: getattr(PRESETS["a100"], f.name) for f in fields(HardwareSpec)},
           **_A100_40GB_CHANGES, "name": "a100-40gb",
           "description": "NVIDIA A100 SXM4 40GB (Ampere), the FlashAttention paper's GPU",
           "sources": {**PRESETS["a100"].sources, **_A100_40GB_SOURCES}})
_preset(
    name="b200", description="NVIDIA B200 (Blackwell)",
    sm_count=148, sm_clock_hz=1.85e9,
    hbm_capacity_bytes=180 * 10**9, hbm_bandwidth_bytes_per_s=8.0e12, hbm_achievable_fraction=0.90,
    hbm_latency_cycles=600, l2_capacity_bytes=126 * 10**6, l2_bandwidth_bytes_per_clk=12288.0,
    l2_hit_latency_cycles=300, sm_max_inflight_bytes=65536, sm_load_bandwidth_bytes_per_clk=128.0,
    smem_per_sm_bytes=233472, smem_per_cta_max_bytes=232448, smem_bandwidth_bytes_per_clk_per_sm=128.0,
    tmem_per_sm_bytes=262144,
    mma_sync_bf16_flops_per_clk_per_sm=2731.0, mma_sync_sustained_fraction=1.0, mma_sync_serial_operands=True,
    sram_per_sm_bytes=262144, tcgen05_bf16_flops_per_clk_per_sm=8192.0,
    tcgen05_fp8_flops_per_clk_per_sm=16384.0, tensor_sustained_fraction=0.85,
    mufu_ops_per_clk_per_sm=16.0, fp32_ops_per_clk_per_sm=128.0,
    has_tma=True, tma_max_inflight_bytes=196608, tma_bandwidth_bytes_per_clk=128.0,
    async_mma_latency_cycles=0.0,
    kernel_launch_overhead_s=4e-6, pcie_bandwidth_bytes_per_s=55e9,
    sources={"sm_count": _ANCHORS + "; FA4 paper", "sm_clock_hz": "FA4 paper: 1850 MHz",
             "hbm_capacity_bytes": _ANCHORS, "hbm_bandwidth_bytes_per_s": _ANCHORS,
             "hbm_achievable_fraction": "assumed as Hopper (90%)", "hbm_latency_cycles": "assumed ~Hopper",
             "l2_capacity_bytes": _ANCHORS, "l2_bandwidth_bytes_per_clk": "assumed 2x Hopper (two dies)",
             "l2_hit_latency_cycles": "assumed ~Hopper", "sm_max_inflight_bytes": "assumed 1.5x Hopper (deeper TMA queues)",
             "sm_load_bandwidth_bytes_per_clk": "assumed 2x Hopper",
             "smem_per_sm_bytes": _ANCHORS, "smem_per_cta_max_bytes": "as Hopper",
             "smem_bandwidth_bytes_per_clk_per_sm": "FA4 paper: SMEM read 128 B/clk/SM",
             "tmem_per_sm_bytes": "FA4 paper: TMEM 256 KB/SM",
             "mma_sync_bf16_flops_per_clk_per_sm": "legacy mma.sync, assumed as Hopper",
             "mma_sync_sustained_fraction": "assumed as Hopper", "mma_sync_serial_operands": "assumed as Hopper",
             "sram_per_sm_bytes": "assumed as Hopper (256 KB L1 / shared memory)",
             "tcgen05_bf16_flops_per_clk_per_sm": "FA4 paper: 8192 BF16 FLOP/clk/SM",
             "tcgen05_fp8_flops_per_clk_per_sm": "2x BF16 (4.5 PFLOP/s FP8 dense, anchors.md)",
             "tensor_sustained_fraction": "assumed; FA4 reaches 71% of 2.25 PF",
             "mufu_ops_per_clk_per_sm": "FA4 paper: 16 ops/clk/SM", "fp32_ops_per_clk_per_sm": "128 FP32 lanes per SM",
             "has_tma": "Blackwell keeps TMA", "tma_max_inflight_bytes": "assumed 1.5x Hopper",
             "async_mma_latency_cycles": "no tcgen05 measurement: 0 (FA4's single-thread MMA issue with mbarrier "
                                         "completion is built to hide it); the Hopper value would put FA4 20% "
                                         "under its paper figure",
             "tma_bandwidth_bytes_per_clk": "FA4 paper: SMEM 128 B/clk/SM",
             "pcie_bandwidth_bytes_per_s": "PCIe Gen5 x16"},
)


def get_preset(name: str) -> HardwareSpec:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise InputError(f"unknown hardware preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def field_unit(name: str) -> str:
    """The unit a field's name declares, for `gpusim hardware show`."""
    for suffix, unit in (("_bytes_per_clk_per_sm", "B/clk/SM"), ("_bytes_per_clk", "B/clk"),
                         ("_flops_per_clk_per_sm", "FLOP/clk/SM"), ("_ops_per_clk_per_sm", "op/clk/SM"),
                         ("_bytes_per_s", "B/s"), ("_bytes", "B"), ("_cycles", "cycles"), ("_hz", "Hz"),
                         ("_fraction", "fraction"), ("_share", "fraction"), ("_per_sm", "per SM"), ("_s", "s"),
                         ("_count", "count"), ("_pj_per_byte", "pJ/B"), ("_w", "W")):
        if name.endswith(suffix):
            return unit
    return ""
