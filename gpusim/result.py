"""Result of one simulation. Everything the CLI prints or a plot draws comes from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Units whose busy share decides the bound, and the bound each one names.
BOUND_OF_UNIT = {"hbm": "memory", "l2": "memory", "sm_load": "memory", "cp_async": "memory", "tma": "memory",
                 "smem": "memory", "tensor": "compute", "fp32": "compute", "dispatch": "compute", "fetch": "compute",
                 "mufu": "exp"}
#: A kernel whose busiest unit is below this share of the time is waiting on latency, not throughput.
LATENCY_BOUND_BELOW = 0.5


@dataclass(kw_only=True)
class LaunchStats:
    name: str
    ctas: int
    ctas_per_sm: int
    waves: float
    start_s: float
    time_s: float
    simulated_ctas: int
    fold_factor: int


@dataclass(kw_only=True)
class Result:
    kernel: str
    hardware: str
    problem: str
    time_s: float
    flops: float
    hbm_read_bytes: float
    hbm_write_bytes: float
    l2_read_bytes: float
    l2_write_bytes: float
    l2_fabric_bytes: float  # lookups forwarded between the L2's partitions (engine memory; 0 for one partition)
    smem_read_bytes: float
    smem_write_bytes: float
    unit_busy: dict  # unit -> busy share of the kernel time (0..1, averaged over SMs for per-SM units)
    launches: list
    sim_wall_s: float = 0.0
    events: int = 0
    exact: bool = False
    info: dict = field(default_factory=dict)
    trace: list | None = field(default=None, repr=False)

    @property
    def tflops_per_s(self) -> float:
        return self.flops / self.time_s / 1e12 if self.time_s else 0.0

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.time_s if self.time_s else 0.0

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_read_bytes + self.hbm_write_bytes

    @property
    def l2_bytes(self) -> float:
        """What the SMs read from and write to the L2 (the crossbar's traffic)."""
        return self.l2_read_bytes + self.l2_write_bytes

    @property
    def l2_tag_bytes(self) -> float:
        """Bytes looked up at the L2's tag stage, as Nsight Compute's lts__t_bytes counts them: the SMs' requests and
        those one partition forwards to the other."""
        return self.l2_bytes + self.l2_fabric_bytes

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_bytes / self.time_s if self.time_s else 0.0

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per HBM byte."""
        return self.flops / self.hbm_bytes if self.hbm_bytes else float("inf")

    @property
    def busiest_unit(self) -> str:
        return max(self.unit_busy, key=self.unit_busy.get) if self.unit_busy else ""

    @property
    def bound(self) -> str:
        """compute, memory, exp or latency: what the busiest unit says, or latency if nothing is busy."""
        unit = self.busiest_unit
        if not unit or self.unit_busy[unit] < LATENCY_BOUND_BELOW:
            return "latency"
        return BOUND_OF_UNIT.get(unit, unit)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("trace")
        data.update(tflops_per_s=self.tflops_per_s, bound=self.bound, hbm_bytes=self.hbm_bytes,
                    l2_bytes=self.l2_bytes, l2_tag_bytes=self.l2_tag_bytes, hbm_bytes_per_s=self.hbm_bytes_per_s,
                    bytes_per_s=self.hbm_bytes_per_s, busiest_unit=self.busiest_unit)
        return data
