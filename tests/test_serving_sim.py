"""Request-level serving simulation: chunked prefill trades TTFT for smoother decoding, the token accounting
adds up, the step cost model matches its stated formulas, kernel times are cached, bad input is an InputError."""

import json
import math
import sys
from dataclasses import replace

import matplotlib.figure
import numpy as np
import pytest

from gpusim.cli import main
from gpusim.errors import InputError
from gpusim.plots.serving import step_latency_figure
from gpusim.problem import AttentionProblem
from gpusim.hardware import get_preset
from gpusim.serving.allocator import TraceSpec
from gpusim.serving.serving_sim import (ServingConfig, StepCostModel, arrival_times, compare_chunking,
                                        default_prefill_kernel, simulate_serving)

#: Mixed load: long-tailed prompts (mean 1000 tokens, some up to 8k) with shorter outputs, moderate rate.
MIXED = ServingConfig(rate_per_s=3.0, trace=TraceSpec(requests=100, mean_prompt=1000, mean_output=250,
                                                      max_seq_len=8192, seed=0))
#: ShareGPT-like lengths (allocator defaults), busier.
SHAREGPT = ServingConfig(rate_per_s=8.0, trace=TraceSpec(requests=120, seed=1))


@pytest.fixture(scope="module")
def mixed():
    return compare_chunking(MIXED, 512)


@pytest.fixture(scope="module")
def sharegpt():
    return compare_chunking(SHAREGPT, 256)


def test_chunked_prefill_lowers_p99_tpot_at_a_ttft_cost(mixed):
    plain, chunked = mixed.unchunked, mixed.chunked
    assert chunked.tpot_p(99) < plain.tpot_p(99)
    # the prefill stall: without chunking a whole prompt runs in one step while every decode waits
    assert chunked.itl_max_s < plain.itl_max_s / 3
    assert max(s.duration_s for s in chunked.steps) < max(s.duration_s for s in plain.steps) / 3
    # the cost: prompts are spread over several steps, each carrying the running decodes
    assert chunked.ttft_p(50) > plain.ttft_p(50) and chunked.ttft_p(99) > plain.ttft_p(99)
    # same work: throughput within 1%
    assert chunked.throughput_tokens_per_s == pytest.approx(plain.throughput_tokens_per_s, rel=0.01)


def test_sharegpt_load_same_direction(sharegpt):
    plain, chunked = sharegpt.unchunked, sharegpt.chunked
    assert chunked.tpot_p(99) < plain.tpot_p(99) and chunked.itl_p(99) < plain.itl_p(99)
    assert chunked.ttft_p(99) > plain.ttft_p(99)


@pytest.mark.parametrize("which", ["unchunked", "chunked"])
def test_throughput_accounting_adds_up(sharegpt, which):
    res = getattr(sharegpt, which)
    prompts, outputs = SHAREGPT.trace.lengths()
    assert res.output_tokens == int(outputs.sum()) == sum(s.output_tokens for s in res.steps)
    assert sum(s.prefill_tokens for s in res.steps) == int(prompts.sum())
    assert res.throughput_tokens_per_s * res.duration_s == pytest.approx(res.output_tokens, rel=1e-12)
    assert res.throughput_requests_per_s * res.duration_s == pytest.approx(len(res.requests), rel=1e-12)
    assert len(res.itl_s) == int((outputs - 1).sum())
    for a, b in zip(res.steps, res.steps[1:]):          # one engine: steps never overlap
        assert b.start_s >= a.start_s + a.duration_s - 1e-12
    assert res.busy_s <= res.end_s
    for s in res.steps:
        assert s.duration_s == pytest.approx(s.attention_s + s.linear_s, rel=1e-12)
    if which == "chunked":
        budget = res.config.chunk_size
        assert all(s.decode_tokens + s.prefill_tokens <= max(budget, s.decode_tokens) for s in res.steps)
    else:
        assert all(s.decode_tokens == 0 or s.prefill_tokens == 0 for s in res.steps)
    for r in res.requests:
        assert r.arrival_s < r.first_token_s <= r.finish_s
        assert r.ttft_s > 0 and (r.tpot_s is None or r.tpot_s > 0)
    summary = res.summary()
    assert summary["output_tokens"] == res.output_tokens and summary["tpot_p99_s"] >= summary["tpot_p50_s"]


def test_linear_cost_by_hand():
    """llama3-8b (8.0e9 params, bf16) on h200: 16e9 B / (4.8e12 x 0.885 B/s) = 3.7665 ms per step, plus
    2 x 8e9 FLOPs per token at the simulated rate of an 8192^3 GEMM (power-capped on the H200)."""
    from gpusim.problem import GemmProblem
    from gpusim.simulate import simulate
    from gpusim.serving.serving_sim import gemm_flops_per_s

    cost = StepCostModel("llama3-8b", "h200")
    assert cost.linear_s(0) == pytest.approx(16e9 / (4.8e12 * 0.885), rel=1e-12)
    assert cost.linear_s(0) == pytest.approx(3.7665e-3, rel=1e-4)
    per_token = (cost.linear_s(100) - cost.linear_s(0)) / 100
    gemm = simulate("gemm", GemmProblem(m=8192, n=8192, k=8192), "h200")
    assert gemm_flops_per_s(get_preset("h200")) == pytest.approx(gemm.flops / gemm.time_s, rel=1e-12)
    assert per_token == pytest.approx(16e9 / (gemm.flops / gemm.time_s), rel=1e-9)
    # run 15: cuBLAS held 665 TFLOP/s at the cap; the simulated GEMM is within 15% of it
    assert 565e12 < gemm.flops / gemm.time_s < 765e12


def test_attention_cost_uses_the_simulator_on_buckets():
    from gpusim.simulate import simulate

    cost = StepCostModel("llama3-8b", "h200")
    p = AttentionProblem(batch=4, heads=32, kv_heads=8, seq_len=1, kv_len=512, head_dim=128)
    t512 = simulate("flash_decoding", p, "h200").time_s
    t1024 = simulate("flash_decoding", replace(p, kv_len=1024), "h200").time_s
    t8_512 = simulate("flash_decoding", replace(p, batch=8), "h200").time_s
    assert cost.decode_attention_s(4, 512) == pytest.approx(t512, rel=1e-12)          # grid point: exact
    assert cost.decode_attention_s(4, 768) == pytest.approx((t512 + t1024) / 2, rel=1e-12)  # bilinear
    assert cost.decode_attention_s(6, 512) == pytest.approx((t512 + t8_512) / 2, rel=1e-12)
    # prefill: the FLOP rate of the bucket (seq and kv rounded up to powers of two) times the piece's FLOPs
    bucket = AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=128, kv_len=1024, head_dim=128, causal=True)
    piece = replace(bucket, seq_len=100, kv_len=1000)
    tb = simulate("fa3", bucket, "h200").time_s
    assert cost.prefill_kernel == "fa3"
    assert cost.prefill_attention_s(128, 1024) == pytest.approx(tb, rel=1e-12)
    assert cost.prefill_attention_s(100, 1000) == pytest.approx(tb * piece.flops / bucket.flops, rel=1e-12)
    step = cost.step([600, 936], [(100, 1000)])
    per_layer = cost.decode_attention_s(2, 768) + cost.prefill_attention_s(100, 1000)
    assert step.attention_s == pytest.approx(32 * per_layer)
    assert step.linear_s == pytest.approx(cost.linear_s(102))


def test_kernel_times_are_cached_and_few(sharegpt, monkeypatch):
    assert sharegpt.unchunked.simulator_shapes <= 60 and sharegpt.chunked.simulator_shapes <= 60
    assert sharegpt.unchunked.wall_s < 10 and sharegpt.chunked.wall_s < 10

    def boom(*args, **kwargs):
        raise AssertionError("kernel simulator called for a cached shape")

    monkeypatch.setattr(sys.modules["gpusim.simulate"], "simulate", boom)
    again = simulate_serving(replace(SHAREGPT, chunk_size=256))
    assert again.summary()["tpot_p99_s"] == sharegpt.chunked.summary()["tpot_p99_s"]


def test_poisson_arrivals():
    gaps = np.diff(arrival_times(10.0, 4000, seed=3), prepend=0.0)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)   # exponential: coefficient of variation 1
    assert np.array_equal(arrival_times(10.0, 50, seed=3), arrival_times(10.0, 50, seed=3))


def test_prefill_kernel_choice():
    assert default_prefill_kernel("h200") == "fa3" and default_prefill_kernel("a100") == "fa2"


@pytest.mark.parametrize("kwargs", [dict(rate_per_s=0), dict(rate_per_s=math.nan), dict(chunk_size=0),
                                    dict(max_seqs=0), dict(max_batch_tokens=1000), dict(kv_memory_fraction=1.5)])
def test_bad_config_is_input_error(kwargs):
    with pytest.raises(InputError):
        ServingConfig(trace=TraceSpec(requests=10, max_seq_len=2048), **kwargs)


def test_model_that_does_not_fit_is_input_error():
    with pytest.raises(InputError, match="do not fit"):
        simulate_serving(ServingConfig(model="llama3-70b", trace=TraceSpec(requests=5)))
    with pytest.raises(InputError):
        simulate_serving(ServingConfig(model="no-such-model", trace=TraceSpec(requests=5)))


def test_step_latency_figure(mixed):
    assert isinstance(step_latency_figure(mixed), matplotlib.figure.Figure)
    assert isinstance(step_latency_figure([mixed.chunked], window_s=(0, 5)), matplotlib.figure.Figure)


def test_cli_serve_json_and_outputs(tmp_path, capsys):
    args = ["serve", "--requests", "40", "--rate", "8", "--chunk", "256", "--seed", "2"]
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["chunk_size"] for r in data["runs"]] == [None, 256]
    assert {"ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "throughput_tokens_per_s"} <= set(data["runs"][0])
    out = tmp_path / "serve"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert main(args + ["--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"summary.json", "steps.csv", "requests.csv", "step_latency.png",
                                               "step_latency.svg"}
    assert [p.name for p in tmp_path.iterdir()] == ["serve"]          # no staging folder left behind
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][1]["output_tokens"] == data["runs"][1]["output_tokens"]


@pytest.mark.parametrize("bad", [["--rate", "0"], ["--chunk", "0"], ["--requests", "0"], ["--model", "nope"],
                                 ["--hardware", "nope"], ["--model", "llama3-70b"], ["--set", "bogus=1"]])
def test_cli_serve_bad_input_exits_2(bad, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["serve", "--requests", "5", *bad, "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()
