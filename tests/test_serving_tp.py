"""Tensor parallelism: heads split across GPUs, per-GPU KV bytes = total / tp when tp divides the KV heads;
otherwise an InputError naming the options, or replication with its memory cost when asked."""

import matplotlib.figure
import pytest

from gpusim.errors import InputError
from gpusim.plots.serving import tensor_parallel_figure
from gpusim.problem import AttentionProblem
from gpusim.serving.models import ModelShape
from gpusim.serving.tensor_parallel import kv_heads_by_gpu, tp_attention, tp_plan, tp_sweep
from gpusim.simulate import simulate


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_divisible_split(tp):
    plan = tp_plan("llama3-70b", tp)
    assert plan.policy == "split" and plan.replication == 1.0
    assert plan.heads_per_gpu == 64 // tp and plan.kv_heads_per_gpu == 8 // tp
    # 80 layers x 2 x 8 heads x 128 x 2 bytes = 327680 bytes per token in all
    assert plan.kv_bytes_per_token_total == 327680
    assert plan.kv_bytes_per_token_per_gpu * tp == plan.kv_bytes_per_token_total
    assert plan.kv_bytes_per_gpu(4, 1000) == plan.kv_bytes_total(4, 1000) // tp


def test_llama3_8b_tp4_by_hand():
    """131072 bytes per token over 4 GPUs: 32768 each (2 KV heads, 8 query heads per GPU)."""
    plan = tp_plan("llama3-8b", 4)
    assert (plan.heads_per_gpu, plan.kv_heads_per_gpu, plan.kv_bytes_per_token_per_gpu) == (8, 2, 32768)


def test_indivisible_kv_heads_error_lists_options():
    with pytest.raises(InputError, match="replicate") as exc:
        tp_plan("llama3-70b", 16)
    assert "2x" in str(exc.value) and "[1, 2, 4, 8]" in str(exc.value)


def test_replication_and_its_cost():
    plan = tp_plan("llama3-70b", 16, kv_policy="replicate")
    assert plan.policy == "replicate" and plan.kv_heads_by_gpu == (1,) * 16
    assert plan.kv_heads_per_gpu == 1 and plan.kv_heads_stored == 16 and plan.replication == 2.0
    # each GPU holds 1 of 8 KV heads: 1/8 of the cache, twice the 1/16 a split would give
    assert plan.kv_bytes_per_token_per_gpu == plan.kv_bytes_per_token_total // 8
    assert plan.kv_bytes_per_token_per_gpu * 16 == 2 * plan.kv_bytes_per_token_total


def test_replication_general_rule():
    """24 query heads, 8 KV heads (groups of 3), tp=3: GPU query heads 0-7, 8-15, 16-23 read KV heads
    {0,1,2}, {2,3,4,5}, {5,6,7}; every GPU provisions 4, 12 stored for 8 (1.5x)."""
    assert kv_heads_by_gpu(24, 8, 3) == (3, 4, 3)
    shape = ModelShape(name="toy", layers=2, heads=24, kv_heads=8, head_dim=64)
    plan = tp_plan(shape, 3, kv_policy="replicate")
    assert plan.kv_heads_per_gpu == 4 and plan.replication == 1.5
    result = tp_attention(shape, 3, batch=2, kv_len=512, kv_policy="replicate")
    assert (result.gpu_problem.heads, result.gpu_problem.kv_heads) == (8, 4)


def test_query_heads_must_divide():
    with pytest.raises(InputError, match="71 query heads"):
        tp_plan("falcon-7b", 2, kv_policy="replicate")
    with pytest.raises(InputError):
        tp_plan("llama3-8b", 0)
    with pytest.raises(InputError):
        tp_plan("llama3-8b", 2, kv_policy="shard")


def test_attention_time_from_the_per_gpu_problem():
    result = tp_attention("llama3-8b", 2, batch=8, kv_len=4096, hardware="h200")
    gpu = AttentionProblem(batch=8, heads=16, kv_heads=4, seq_len=1, kv_len=4096, head_dim=128)
    assert result.gpu_problem == gpu and result.kernel == "flash_decoding"
    assert result.attention_s_per_layer == simulate("flash_decoding", gpu, "h200").time_s
    assert result.attention_s_per_layer < result.single_gpu_s_per_layer and result.speedup > 1.3
    assert result.kv_bytes_per_gpu * 2 == result.kv_bytes_total == 8 * 4096 * 131072


def test_sweep_and_figure():
    rows = tp_sweep("llama3-70b", tps=(1, 2, 4, 8, 16), batch=4, kv_len=2048)
    per_gpu = [r.kv_bytes_per_gpu for r in rows]
    assert per_gpu[:4] == [rows[0].kv_bytes_total // t for t in (1, 2, 4, 8)] and per_gpu[4] == per_gpu[3]
    times = [r.attention_s_per_layer for r in rows]
    assert times[1] < times[0]
    assert isinstance(tensor_parallel_figure(rows), matplotlib.figure.Figure)
