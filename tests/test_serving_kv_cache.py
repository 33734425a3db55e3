"""KV-cache sizing: hand-checkable bytes, dtype and scale formulas, MHA/GQA/MQA ratios, the kv-cache CLI."""

import json

import pytest

from gpusim.errors import InputError
from gpusim.serving.cli import main as cli_main
from gpusim.serving.kv_cache import KVFormat, attention_variants, dtype_table, kv_cache_size, max_tokens_in
from gpusim.serving.models import MODELS, SOURCES, ModelShape, get_model


def test_llama3_8b_bf16_is_131072_bytes_per_token():
    size = kv_cache_size("llama3-8b", dtype="bf16")
    assert size.bytes_per_token_per_layer == 2 * 8 * 128 * 2 == 4096
    assert size.bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072


@pytest.mark.parametrize("name,layers,heads,kv_heads,head_dim", [
    ("llama2-7b", 32, 32, 32, 128), ("llama2-70b", 80, 64, 8, 128), ("llama3-8b", 32, 32, 8, 128),
    ("llama3-70b", 80, 64, 8, 128), ("mistral-7b", 32, 32, 8, 128), ("gemma2-9b", 42, 16, 8, 256),
    ("falcon-7b", 32, 71, 1, 64), ("falcon-40b", 60, 128, 8, 64)])
def test_presets_have_published_shapes_and_sources(name, layers, heads, kv_heads, head_dim):
    m = get_model(name)
    assert (m.layers, m.heads, m.kv_heads, m.head_dim) == (layers, heads, kv_heads, head_dim)
    assert "config.json" in SOURCES[name]
    assert kv_cache_size(m).bytes_per_token == layers * 2 * kv_heads * head_dim * 2


def test_model_names_are_forgiving_and_unknown_is_input_error():
    assert get_model("Llama-3-8B") is MODELS["llama3-8b"]
    assert get_model("falcon_40b") is MODELS["falcon-40b"]
    with pytest.raises(InputError, match="did you mean"):
        get_model("falcon7b")


def test_attention_kinds():
    assert get_model("llama2-7b").attention_kind == "MHA"
    assert get_model("llama3-8b").attention_kind == "GQA"
    assert get_model("falcon-7b").attention_kind == "MQA"


def test_batch_and_seq_len_multiply():
    size = kv_cache_size("llama3-8b", batch=8, seq_len=4096)
    assert size.total_bytes == 8 * 4096 * 131072 == 4 * 2**30


def test_quantized_formats_and_scale_formulas():
    # fp8 with per-tensor scales: 1 byte per element, one fp32 per layer for K and for V
    fp8 = kv_cache_size("llama3-8b", dtype="fp8", batch=2, seq_len=10)
    assert fp8.bytes_per_token == 65536
    assert fp8.fixed_bytes == 32 * 2 * 4
    assert fp8.total_bytes == 2 * 10 * 65536 + 256
    # int8, one fp16 scale per token and head (block of head_dim): 2 x 8 x (128 + 2)
    assert kv_cache_size("llama3-8b", dtype="int8").bytes_per_token_per_layer == 2 * 8 * 130
    # int4, groups of 32: 2 x 8 x (64 + 4 x 2) = 1152
    int4 = kv_cache_size("llama3-8b", dtype="int4")
    assert int4.bytes_per_token_per_layer == 1152
    assert int4.scale_bytes_per_token_per_layer == 128
    # per-channel scales are per sequence: 32 layers x 2 x 8 heads x 128 channels x 2 bytes
    ch = kv_cache_size("llama3-8b", dtype="int4", scale="channel", batch=3, seq_len=100)
    assert ch.bytes_per_token_per_layer == 2 * 8 * 64
    assert ch.bytes_per_sequence_overhead == 32 * 2 * 8 * 128 * 2
    assert ch.total_bytes == 3 * (100 * 32 * 1024 + 32 * 2 * 8 * 128 * 2)
    # fewer bits, fewer bytes
    per_token = [row.bytes_per_token for row in dtype_table("llama3-8b")]
    assert per_token[0] == per_token[1] > per_token[2] < per_token[3] and per_token[3] > per_token[4]


def test_mha_gqa_mqa_ratios_at_equal_heads():
    rows = attention_variants("llama3-8b")
    assert [r.kind for r in rows] == ["MHA", "GQA", "MQA"]
    assert [r.kv_heads for r in rows] == [32, 8, 1]
    assert [r.ratio_to_mha for r in rows] == [1.0, 0.25, 1 / 32]
    assert rows[0].size.bytes_per_token == 524288


def test_max_tokens_in_budget():
    assert max_tokens_in(2**30, "llama3-8b") == 2**30 // 131072 == 8192


@pytest.mark.parametrize("kwargs", [dict(dtype="int3"), dict(dtype="bf16", scale="block"),
                                    dict(dtype="int8", scale="none"), dict(dtype="int4", scale="tensor", group_size=8),
                                    dict(dtype="int4", group_size=0)])
def test_bad_formats_are_input_errors(kwargs):
    with pytest.raises(InputError):
        KVFormat(**kwargs)


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError):
        ModelShape(name="x", layers=32, heads=32, kv_heads=5, head_dim=128)
    with pytest.raises(InputError):
        kv_cache_size("llama3-8b", batch=0)


def test_cli_json_has_bytes_per_token(capsys):
    assert cli_main(["kv-cache", "--model", "llama3-8b", "--batch", "2", "--seq-len", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes_per_token"] == 131072
    assert data["bytes_per_token_per_layer"] == 4096
    assert data["total_bytes"] == 2 * 8 * 131072
    assert (data["model"], data["batch"], data["seq_len"], data["dtype"]) == ("llama3-8b", 2, 8, "bf16")


def test_cli_custom_shape_and_compare(capsys):
    assert cli_main(["kv-cache", "--layers", "32", "--kv-heads", "1", "--heads", "32", "--head-dim", "128",
                     "--compare", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attention"] == "MQA" and data["bytes_per_token"] == 32 * 2 * 128 * 2
    assert [r["ratio_to_mha"] for r in data["attention_variants"]] == [1.0, 0.25, 1 / 32]


def test_cli_table_and_list_models(capsys):
    assert cli_main(["kv-cache", "--model", "gemma2-9b", "--dtype", "int4"]) == 0
    assert "bytes per token" in capsys.readouterr().out
    assert cli_main(["kv-cache", "--list-models", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 8


def test_cli_bad_input_exits_2(capsys):
    assert cli_main(["kv-cache", "--layers", "32"]) == 2
    assert cli_main(["kv-cache", "--model", "llama3-8b", "--layers", "4"]) == 2
    assert "error" in capsys.readouterr().out
