"""Tensor parallelism for attention: a TP degree splits the query and KV heads across GPUs (Megatron-LM,
Shoeybi et al. 2019, arXiv 1909.08053 Sec. 3: attention heads are partitioned column-parallel, each GPU
computes its heads' attention on its own KV cache with no communication inside attention).

GPU g of `tp` owns query heads [g x H/tp, (g+1) x H/tp) and stores the KV heads those query heads read
(query head h reads KV head h // (H / kv_heads)). Query heads must divide evenly (else InputError: there is
no split of an odd head out). For KV heads:
  - kv_heads % tp == 0: each GPU stores kv_heads / tp KV heads; per-GPU KV bytes = total / tp.
  - otherwise the KV heads cannot be split; the default is an InputError that lists the options. With
    kv_policy="replicate" each GPU stores every KV head one of its query heads reads (vLLM's rule when tp is a
    multiple of kv_heads: max(1, kv_heads // tp) = 1 KV head per GPU, each KV head on tp / kv_heads GPUs).
    The general rule, also for tp neither a multiple nor a divisor of kv_heads (e.g. H=24, kv_heads=8,
    tp=3: GPUs store 3, 4 and 3 KV heads), is: KV heads on GPU g = |{h // group : h in g's query heads}|;
    every GPU provisions the largest such count. The memory cost is reported as `replication`
    = KV heads stored over all GPUs / kv_heads (2.0 for Llama 3 70B at tp=16), and the bytes per GPU.
Attention time per layer: `simulate` on the per-GPU problem (heads H/tp, KV heads as stored; when the stored
count does not divide H/tp the simulated problem uses the next divisor above it, so its KV bytes are an upper
bound). `flash_decoding` for decode (seq_len 1), the serving prefill kernel (fa3 on Hopper) otherwise.
Not modeled: the all-reduce after the output projection, and the linear layers (see serving_sim).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec
from gpusim.problem import AttentionProblem
from gpusim.serving.kv_cache import KVCacheSize, KVFormat
from gpusim.serving.models import ModelShape
from gpusim.serving.serving_sim import _hardware, _model, default_prefill_kernel, kernel_time_s

KV_POLICIES = ("error", "replicate")


def kv_heads_by_gpu(heads: int, kv_heads: int, tp: int) -> tuple[int, ...]:
    """KV heads each GPU must store: the distinct KV heads its query heads read."""
    per, group = heads // tp, heads // kv_heads
    return tuple(len({h // group for h in range(g * per, (g + 1) * per)}) for g in range(tp))


@dataclass(frozen=True, kw_only=True)
class TPPlan:
    model: str
    tp: int
    heads: int
    kv_heads: int
    heads_per_gpu: int
    kv_heads_per_gpu: int           # provisioned on every GPU (the largest need)
    kv_heads_by_gpu: tuple
    policy: str                     # "split" or "replicate"
    layers: int
    head_dim: int
    dtype: str = "bf16"

    @property
    def replicated(self) -> bool:
        return self.policy == "replicate"

    @property
    def kv_heads_stored(self) -> int:
        """KV heads provisioned over all GPUs."""
        return self.kv_heads_per_gpu * self.tp

    @property
    def replication(self) -> float:
        """KV memory over all GPUs against one copy of the KV cache (1 when the heads split)."""
        return self.kv_heads_stored / self.kv_heads

    def _bytes_per_token(self, kv_heads: int) -> int:
        shape = ModelShape(name=self.model, layers=self.layers, heads=kv_heads, kv_heads=kv_heads,
                           head_dim=self.head_dim)
        return KVCacheSize(model=shape, fmt=KVFormat(dtype=self.dtype)).bytes_per_token

    @property
    def kv_bytes_per_token_total(self) -> int:
        """One copy of the model's KV cache (all layers), per token."""
        return self._bytes_per_token(self.kv_heads)

    @property
    def kv_bytes_per_token_per_gpu(self) -> int:
        return self._bytes_per_token(self.kv_heads_per_gpu)

    def kv_bytes_per_gpu(self, batch: int, seq_len: int) -> int:
        return batch * seq_len * self.kv_bytes_per_token_per_gpu

    def kv_bytes_total(self, batch: int, seq_len: int) -> int:
        return batch * seq_len * self.kv_bytes_per_token_total

    def describe(self) -> str:
        how = (f"{self.kv_heads} KV heads split {self.kv_heads_per_gpu} per GPU" if not self.replicated else
               f"{self.kv_heads} KV heads replicated: {self.kv_heads_per_gpu} per GPU, {self.replication:g}x memory")
        return f"{self.model} tp={self.tp}: {self.heads_per_gpu} query heads per GPU, {how}"

    def to_dict(self) -> dict:
        return {**self.__dict__, "kv_heads_by_gpu": list(self.kv_heads_by_gpu), "replication": self.replication,
                "kv_heads_stored": self.kv_heads_stored, "kv_bytes_per_token_total": self.kv_bytes_per_token_total,
                "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token_per_gpu}


def tp_plan(model: ModelShape | str, tp: int, *, kv_policy: str = "error", dtype: str = "bf16") -> TPPlan:
    """How `tp` GPUs split `model`'s heads; InputError for a KV-head count tp does not divide unless
    kv_policy="replicate"."""
    shape = _model(model)
    if isinstance(tp, bool) or not isinstance(tp, int) or tp <= 0:
        raise InputError(f"tensor parallel: tp={tp!r} must be a positive whole number")
    if kv_policy not in KV_POLICIES:
        raise InputError(f"tensor parallel: kv_policy={kv_policy!r}; known: {', '.join(KV_POLICIES)}")
    H, Hk = shape.heads, shape.kv_heads
    if H % tp:
        divisors = [t for t in range(1, H + 1) if H % t == 0]
        raise InputError(f"tensor parallel: {shape.name} has {H} query heads, which tp={tp} does not divide "
                         f"(query heads cannot be replicated; tp must be one of {divisors})")
    by_gpu = kv_heads_by_gpu(H, Hk, tp)
    common = dict(model=shape.name, tp=tp, heads=H, kv_heads=Hk, heads_per_gpu=H // tp, layers=shape.layers,
                  head_dim=shape.head_dim, dtype=dtype, kv_heads_by_gpu=by_gpu, kv_heads_per_gpu=max(by_gpu))
    if Hk % tp == 0:
        return TPPlan(policy="split", **common)
    plan = TPPlan(policy="replicate", **common)
    if kv_policy == "error":
        divisors = [t for t in range(1, Hk + 1) if Hk % t == 0 and H % t == 0]
        raise InputError(
            f"tensor parallel: {shape.name} has {Hk} KV heads, which tp={tp} does not divide. Options: "
            f"kv_policy='replicate' (each GPU stores the KV heads its {H // tp} query heads read: "
            f"{plan.kv_heads_per_gpu} per GPU, {plan.kv_heads_stored} stored for {Hk}, {plan.replication:g}x the KV "
            f"memory, {plan.kv_bytes_per_token_per_gpu} bytes per token per GPU instead of "
            f"{plan.kv_bytes_per_token_total / tp:g}), or a tp that divides {Hk}: {divisors}")
    return plan


def _divisor_at_least(n: int, k: int) -> int:
    return next(d for d in range(k, n + 1) if n % d == 0)


@dataclass(frozen=True, kw_only=True)
class TPAttention:
    plan: TPPlan
    kernel: str
    batch: int
    seq_len: int
    kv_len: int
    hardware: str
    gpu_problem: AttentionProblem
    attention_s_per_layer: float        # on one GPU of the group (all run in parallel)
    single_gpu_s_per_layer: float       # the whole problem on one GPU
    kv_bytes_per_gpu: int
    kv_bytes_total: int                 # one copy

    @property
    def speedup(self) -> float:
        return self.single_gpu_s_per_layer / self.attention_s_per_layer

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "kernel": self.kernel, "batch": self.batch, "seq_len": self.seq_len,
                "kv_len": self.kv_len, "hardware": self.hardware, "gpu_problem": self.gpu_problem.describe(),
                "attention_s_per_layer": self.attention_s_per_layer,
                "single_gpu_s_per_layer": self.single_gpu_s_per_layer, "speedup": self.speedup,
                "kv_bytes_per_gpu": self.kv_bytes_per_gpu, "kv_bytes_total": self.kv_bytes_total}


def tp_attention(model: ModelShape | str, tp: int, *, batch: int = 8, kv_len: int = 4096, seq_len: int = 1,
                 hardware: HardwareSpec | str = "h200", kv_policy: str = "error",
                 kernel: str | None = None) -> TPAttention:
    """Per-GPU KV bytes and attention time per layer of `tp`-way tensor parallelism."""
    shape, hw = _model(model), _hardware(hardware)
    plan = tp_plan(shape, tp, kv_policy=kv_policy)
    kernel = kernel or ("flash_decoding" if seq_len == 1 else default_prefill_kernel(hw))
    causal = seq_len > 1
    sim_kv = _divisor_at_least(plan.heads_per_gpu, plan.kv_heads_per_gpu)
    gpu = AttentionProblem(batch=batch, heads=plan.heads_per_gpu, kv_heads=sim_kv, seq_len=seq_len, kv_len=kv_len,
                           head_dim=shape.head_dim, causal=causal)
    whole = AttentionProblem(batch=batch, heads=shape.heads, kv_heads=shape.kv_heads, seq_len=seq_len, kv_len=kv_len,
                             head_dim=shape.head_dim, causal=causal)
    return TPAttention(plan=plan, kernel=kernel, batch=batch, seq_len=seq_len, kv_len=kv_len, hardware=hw.name,
                       gpu_problem=gpu, attention_s_per_layer=kernel_time_s(kernel, gpu, hw),
                       single_gpu_s_per_layer=kernel_time_s(kernel, whole, hw),
                       kv_bytes_per_gpu=plan.kv_bytes_per_gpu(batch, kv_len),
                       kv_bytes_total=plan.kv_bytes_total(batch, kv_len))


def tp_sweep(model: ModelShape | str = "llama3-70b", *, tps=(1, 2, 4, 8, 16), batch: int = 8, kv_len: int = 4096,
             seq_len: int = 1, hardware: HardwareSpec | str = "h200",
             kv_policy: str = "replicate") -> list[TPAttention]:
    return [tp_attention(model, tp, batch=batch, kv_len=kv_len, seq_len=seq_len, hardware=hardware,
                         kv_policy=kv_policy) for tp in tps]
