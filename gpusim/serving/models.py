"""Model presets: the attention shapes of open models, as published in their config.json files.

Only what the KV cache and attention kernels depend on is kept: layers, query heads, KV heads and head
dimension (plus the hidden size and parameter count, to compare attention variants at equal model size).
Every preset names its source. Attention variants: MHA when kv_heads == heads, MQA when kv_heads == 1,
GQA otherwise (Ainslie et al. 2023, arXiv 2305.13245).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from gpusim.errors import InputError
from gpusim.problem import require_positive_ints


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The attention shape of a decoder-only transformer. Every layer has its own K and V cache."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int | None = None
    params_billions: float | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        require_positive_ints(f"model {self.name}", layers=self.layers, heads=self.heads, kv_heads=self.kv_heads,
               head_dim=self.head_dim)
        if self.heads % self.kv_heads:
            raise InputError(f"model {self.name}: heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.hidden_size is not None:
            require_positive_ints(f"model {self.name}", hidden_size=self.hidden_size)

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    @property
    def attention_kind(self) -> str:
        if self.kv_heads == self.heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else "GQA"

    def with_kv_heads(self, kv_heads: int, name: str | None = None) -> "ModelShape":
        """The same model with another KV-head count (query heads and everything else unchanged)."""
        return replace(self, kv_heads=kv_heads, name=name or f"{self.name} (kv_heads={kv_heads})",
                       params_billions=None, notes="variant")

    def describe(self) -> str:
        return (f"{self.name}: {self.layers} layers, {self.heads} heads, {self.kv_heads} KV heads "
                f"({self.attention_kind}), head dim {self.head_dim}")


_HF = "https://huggingface.co/{}/blob/main/config.json"

#: Where each preset's shape comes from (the model's config.json on the Hugging Face Hub, and the paper).
SOURCES = {
    "llama2-7b": _HF.format("meta-llama/Llama-2-7b-hf") + " (num_hidden_layers 32, num_attention_heads 32, "
                 "num_key_value_heads 32, hidden_size 4096); Touvron et al. 2023, arXiv 2307.09288 Table 1",
    "llama2-70b": _HF.format("meta-llama/Llama-2-70b-hf") + " (80 layers, 64 heads, num_key_value_heads 8, "
                  "hidden_size 8192); arXiv 2307.09288 Sec. 2.2 (GQA for 34B/70B)",
    "llama3-8b": _HF.format("meta-llama/Meta-Llama-3-8B") + " (32 layers, 32 heads, num_key_value_heads 8, "
                 "hidden_size 4096); Llama 3 herd paper, arXiv 2407.21783 Table 3",
    "llama3-70b": _HF.format("meta-llama/Meta-Llama-3-70B") + " (80 layers, 64 heads, 8 KV heads, "
                  "hidden_size 8192); arXiv 2407.21783 Table 3",
    "mistral-7b": _HF.format("mistralai/Mistral-7B-v0.1") + " (32 layers, 32 heads, num_key_value_heads 8, "
                  "hidden_size 4096, sliding_window 4096); Jiang et al. 2023, arXiv 2310.06825 Table 1",
    "gemma2-9b": _HF.format("google/gemma-2-9b") + " (num_hidden_layers 42, num_attention_heads 16, "
                 "num_key_value_heads 8, head_dim 256, hidden_size 3584); Gemma 2 report, arXiv 2408.00118 Table 1",
    "falcon-7b": _HF.format("tiiuae/falcon-7b") + " (n_layer 32, n_head 71, multi_query true, hidden_size 4544 "
                 "= 71 x 64); Almazrouei et al. 2023, arXiv 2311.16867",
    "falcon-40b": _HF.format("tiiuae/falcon-40b") + " (n_layer 60, n_head 128, n_head_kv 8, hidden_size 8192 "
                  "= 128 x 64); arXiv 2311.16867",
}

MODELS: dict[str, ModelShape] = {m.name: m for m in (
    ModelShape(name="llama2-7b", layers=32, heads=32, kv_heads=32, head_dim=128, hidden_size=4096,
               params_billions=6.7),
    ModelShape(name="llama2-70b", layers=80, heads=64, kv_heads=8, head_dim=128, hidden_size=8192,
               params_billions=69.0),
    ModelShape(name="llama3-8b", layers=32, heads=32, kv_heads=8, head_dim=128, hidden_size=4096,
               params_billions=8.0),
    ModelShape(name="llama3-70b", layers=80, heads=64, kv_heads=8, head_dim=128, hidden_size=8192,
               params_billions=70.6),
    ModelShape(name="mistral-7b", layers=32, heads=32, kv_heads=8, head_dim=128, hidden_size=4096,
               params_billions=7.2, notes="sliding-window attention (4096): the cache of one sequence stops "
                                         "growing at 4096 tokens with a rolling buffer; sized here without it"),
    ModelShape(name="gemma2-9b", layers=42, heads=16, kv_heads=8, head_dim=256, hidden_size=3584,
               params_billions=9.2, notes="every other layer uses a 4096-token sliding window; sized here "
                                         "as if all layers were global"),
    ModelShape(name="falcon-7b", layers=32, heads=71, kv_heads=1, head_dim=64, hidden_size=4544,
               params_billions=7.2),
    ModelShape(name="falcon-40b", layers=60, heads=128, kv_heads=8, head_dim=64, hidden_size=8192,
               params_billions=40.0),
)}


def _canonical(name: str) -> str:
    return re.sub(r"[\s_.]+", "-", name.strip().lower()).replace("llama-", "llama").replace("gemma-", "gemma")


def get_model(name: str) -> ModelShape:
    """A preset by name; case, spaces, dots and underscores are forgiven (`Llama-3-8B`, `llama3_8b`)."""
    key = _canonical(name)
    if key in MODELS:
        return MODELS[key]
    hint = difflib.get_close_matches(key, MODELS, n=1)
    extra = f" (did you mean {hint[0]}?)" if hint else ""
    raise InputError(f"unknown model {name!r}{extra}; known: {', '.join(MODELS)}")


def list_models() -> list[ModelShape]:
    return list(MODELS.values())
