"""Long context beyond GPU memory: offloading KV over PCIe costs time that grows with the offloaded share;
H2O eviction is faster and its output error grows as fewer tokens are kept (0 when all are kept)."""

import matplotlib.figure
import numpy as np
import pytest

from gpusim.errors import InputError
from gpusim.plots.serving import offload_eviction_figure
from gpusim.problem import AttentionProblem
from gpusim.serving.offload import (ERROR_PROBLEM, eviction_error, eviction_sweep, h2o_keep, heavy_hitter_inputs,
                                    offload_sweep)
from gpusim.serving.serving_sim import StepCostModel

BF16_TOL = 2e-2   # the decode kernel's bf16 tiles against float64 (all tokens kept)
CONTEXT = 32768


@pytest.fixture(scope="module")
def offload():
    return offload_sweep("llama3-8b", batch=1, context_len=CONTEXT, hardware="h200")


@pytest.fixture(scope="module")
def eviction():
    return eviction_sweep("llama3-8b", batch=1, context_len=CONTEXT, hardware="h200",
                          kept_fractions=(1.0, 0.5, 0.25, 0.1, 0.05))


def test_offload_time_grows_with_offloaded_fraction(offload):
    rows = offload.rows
    assert [r.offload_fraction for r in rows] == [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    for a, b in zip(rows, rows[1:]):
        assert b.step_serial_s > a.step_serial_s and b.step_overlapped_s > a.step_overlapped_s
    for r in rows:
        assert r.step_overlapped_s <= r.step_serial_s + 1e-15
        assert r.step_overlapped_s >= 32 * max(r.pcie_s_per_layer, r.compute_s_per_layer) - 1e-15
    # no offload: layers x (attention + non-attention share)
    cost = StepCostModel("llama3-8b", "h200")
    assert rows[0].step_serial_s == pytest.approx(32 * rows[0].attention_s_per_layer + cost.linear_s(1), rel=1e-12)


def test_offload_pcie_time_by_hand(offload):
    """Half of one layer's KV (32768 tokens x 4096 B = 128 MiB) over 55 GB/s plus 2 us latency."""
    half = offload.rows[3]
    assert half.offload_fraction == 0.5
    assert half.host_bytes_per_layer == 0.5 * CONTEXT * 4096
    assert half.pcie_s_per_layer == pytest.approx(2e-6 + 0.5 * CONTEXT * 4096 / 55e9, rel=1e-12)
    # PCIe is ~75x slower than HBM: fetching is far slower than the attention that reads it
    assert half.pcie_s_per_layer > 10 * half.attention_s_per_layer


def test_min_offload_fraction():
    """llama3-8b on h200: KV budget 0.9 x 141e9 - 16e9 bytes; 8 x 131072 tokens x 131072 B = 128 GiB."""
    big = offload_sweep("llama3-8b", batch=8, context_len=131072, fractions=(0.0,))
    budget = 0.9 * 141e9 - 16e9
    assert big.kv_bytes_total == 8 * 131072 * 131072
    assert big.min_offload_fraction == pytest.approx(1 - budget / big.kv_bytes_total, rel=1e-12)
    assert 0.15 < big.min_offload_fraction < 0.25


def test_eviction_error_zero_when_all_kept_and_grows(eviction):
    rows = eviction.rows
    assert rows[0].kept_fraction == 1.0 and rows[0].eviction_error == 0.0 and rows[0].recent_error == 0.0
    assert rows[0].kernel_error < BF16_TOL
    errors = [r.eviction_error for r in rows]
    assert all(b > a for a, b in zip(errors, errors[1:]))
    # heavy hitters matter: H2O beats a recent window of the same size at every budget below 1
    assert all(r.eviction_error < r.recent_error for r in rows[1:])
    # the kernel on the evicted cache sees the eviction error plus its own bf16 rounding
    assert all(abs(r.kernel_error - r.eviction_error) < BF16_TOL for r in rows)
    assert rows[0].heavy_mass > 0.8


def test_eviction_time_shrinks_with_the_cache(eviction):
    rows = eviction.rows
    assert [r.kept_tokens for r in rows] == [CONTEXT, CONTEXT // 2, CONTEXT // 4, 3277, 1639]
    times = [r.step_s for r in rows]
    assert all(b < a for a, b in zip(times, times[1:]))
    assert rows[0].speedup == 1.0 and rows[-1].speedup > 1.0


def test_h2o_keep_by_hand():
    scores = np.array([[[5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 0.0, 0.0]]])
    # budget 4: recent window 2 (positions 6, 7) + the top 2 of positions 0..5 (0 and 4)
    assert h2o_keep(scores, 4).tolist() == [[[0, 4, 6, 7]]]
    assert h2o_keep(scores, 4, recent_fraction=0.0).tolist() == [[[0, 2, 4, 5]]]
    assert h2o_keep(scores, 8).tolist() == [[list(range(8))]]
    with pytest.raises(InputError):
        h2o_keep(scores, 0)


def test_heavy_hitter_data_model():
    x = heavy_hitter_inputs(ERROR_PROBLEM, seed=1)
    assert x["Q"].shape == (1, 8, 1, 64) and x["K"].shape == (1, 2, 1024, 64) and x["Q_hist"].shape == (1, 8, 32, 64)
    assert x["heavy"][..., 0].all() and 0.02 < x["heavy"].mean() < 0.1
    # fewer heavy hitters' logit -> attention less concentrated -> larger eviction error at the same budget
    soft = eviction_error(0.25, heavy_logit=2.0, functional=False)
    sharp = eviction_error(0.25, heavy_logit=5.0, functional=False)
    assert soft["heavy_mass"] < sharp["heavy_mass"] and soft["eviction_error"] > sharp["eviction_error"]


@pytest.mark.parametrize("call", [
    lambda: offload_sweep(fractions=(1.5,)),
    lambda: eviction_error(-0.1, functional=False),
    lambda: eviction_sweep(kept_fractions=(0.0,), functional=False),
    lambda: heavy_hitter_inputs(AttentionProblem(batch=1, heads=2, seq_len=4, head_dim=16)),
])
def test_bad_input(call):
    with pytest.raises(InputError):
        call()


def test_figure(offload, eviction):
    assert isinstance(offload_eviction_figure(offload, eviction), matplotlib.figure.Figure)
