"""The model's L2 against patterns measured on the H200: a stream each line of which one CTA reads and others read once
more, a given lag of new data later (validation/model_l2_reuse_lag.py, run 57), and a causal forward's K/V walks at
their recorded times (validation/replay_causal_walks.py, run 58). An L2 change must keep these fits."""

from __future__ import annotations

import sys
from pathlib import Path

VALIDATION = Path(__file__).resolve().parent.parent / "validation"
sys.path.insert(0, str(VALIDATION))

import model_l2_reuse_lag as lag_model  # noqa: E402


def _errors(group: int, followers: int) -> list[float]:
    """|model - GPU| of the model's L2 (the h200 preset) at each lag of run 57's pattern, up to 64 MiB."""
    measured = lag_model.measured_rows()[(group, followers, False)]
    lags = [lag for lag in sorted(measured) if lag <= 64]
    return [abs(lag_model.replay(lag_model.ModelL2(), lag, followers, group, 16 * 1024, 128) - max(measured[lag], 0.0))
            for lag in lags]


def test_model_l2_fits_run57_reread_once_at_a_lag():
    """66 leaders and 66 followers (one CTA per SM): the followers' re-reads per byte of the stream over 13 lags from
    1 to 48 MiB (none up to 14 MiB, a third at 20, 0.99 at 48 on the GPU). Not fitted to them: summed |model - GPU|
    0.30 with the LRU they were measured against, 0.47 with the tree pseudo-LRU (its scattered victims lose a few
    lines at 11-17 MiB lags, at most 0.08 of them; thirtieth session)."""
    errors = _errors(66, 1)
    assert max(errors) < 0.1 and sum(errors) < 0.55


def test_model_l2_on_run57_lines_read_by_three_followers():
    """Three follower groups at thirds of the lag: a line read four times. The GPU keeps more of them than the model's
    LRU, which counts every line re-read in between at its full room (at a 32 MiB lag 1.75 re-reads against the GPU's
    0.80; summed |model - GPU| 1.50; with the tree pseudo-LRU 1.74, which loses some at 20-26 MiB where the GPU keeps
    them). A guard, not a fit: an L2 change must not lose more here."""
    errors = _errors(33, 3)
    assert sum(errors) < 1.9


def test_model_l2_follows_run58_causal_walk():
    """4 heads of 32k tokens, each K/V tile read at the time the GPU's CTA read it: the GPU read K/V 1.71 times a head,
    an LRU of the model's size and spread 1.19. Tree pseudo-LRU victims give 2.21 (thirtieth session): the walk's
    tiles are re-read at 0.25-0.9 of the L2's capacity, where scattered victims fall."""
    import gzip
    import json

    import replay_causal_walks as walks
    from replay_causal_schedule import ModelL2, replayed_kv_reads_per_head

    doc = json.loads(gzip.open(walks.DATA).read())
    timeline, kernel = doc["timelines"][0], doc["kernels"][0]
    case = timeline["case"]
    assert case["heads"] == 4 and case["seq_len"] == 32768
    gpu = walks.gpu_reads_per_head(case, kernel)
    model = walks.reads_per_head(case, replayed_kv_reads_per_head(case, walks.walked_accesses(timeline), ModelL2()))
    assert abs(gpu - 1.71) < 0.01
    assert 1.4 < model < 2.4
