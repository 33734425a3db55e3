"""The model's L2 on runs 57-59's patterns (validation/probe_l2_reuse_lag.py), beside the GPU's.

Each line of a 128 MiB stream is read by a leader CTA and then by k follower CTAs, follower f once the leaders are
f / k of the lag further on:
- run 57: k = 1, groups of 66 and 132 CTAs;
- run 57b (`--readers`): k = 1 and 3, groups of 33;
- run 59 (`--more`): k = 7, groups of 16; and k = 1 and 3 with side traffic, a fresh half chunk read and another
  written per chunk the leaders read.

The replay reads the same 16 KiB chunks in the same order, every group's CTAs on SMs of their own, through
`engine.l2.L2Cache` at the h200 preset, and through the two partitions that replay_causal_schedule.py fits to the
GPU's causal schedules (26.5 MiB each, spread 0.12, far copies 0.45). Prints the followers' DRAM re-reads per byte of
the stream and the summed |model - GPU| of each row.

    python validation/model_l2_reuse_lag.py      (no GPU; about a minute)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ncu_profile import metric_value
from replay_causal_schedule import MIB, ModelL2, TwoPartitions

DATA = Path(__file__).resolve().parent / "data"
RUNS = ("h200_probe_2026-12-01_l2_reuse_lag.json.gz", "h200_probe_2026-12-01_l2_reuse_readers.json.gz",
        "h200_probe_2026-12-01_l2_reuse_more.json.gz")
SMS = 132


class SidedPartitions(TwoPartitions):
    """The two partitions, a reader index past the GPU's SMs placed by its index modulo SMS (followers of groups of
    132: on the GPU two CTAs per SM; here each is a reader of its own, so the model's L2 sees two SMs)."""

    def access(self, sm: int, key, nbytes: float, write: bool) -> float:
        return super().access(sm % SMS, key, nbytes, write)


MODELS = (("model's L2", ModelL2), ("two partitions", lambda: SidedPartitions(26.5 * MIB, 0.12, 0.45)))


def measured_rows() -> dict:
    """(group, followers, side) -> {lag MiB: the followers' DRAM re-reads per byte of the stream}, from runs 57, 57b
    and 59 (`side`: with Q- and O-like traffic, whose reads, each once, are not counted)."""
    rows: dict = {}
    for name in RUNS:
        doc = json.loads(gzip.open(DATA / name).read())
        stream = doc["stream_mib"] * MIB
        for case, kernel in zip(doc["cases"], doc["kernels"]):
            side = bool(case.get("side"))
            share = (metric_value(kernel, "dram__bytes_read.sum") - stream * (1.5 if side else 1.0)) / stream
            rows.setdefault((case["group"], case.get("followers", 1), side), {})[case["lag_mib"]] = share
    return rows


def replay(cache, lag_mib: float, followers: int, group: int, chunk_bytes: int, stream_mib: int,
           side: bool = False) -> float:
    """The followers' DRAM re-reads per byte of the stream: the leaders read chunk `step` while follower f reads the
    chunk f / followers of the lag behind; group g's CTA i sits on SM g x group + i. `side`: the leader of each chunk
    also reads a fresh half chunk and writes another (run 59)."""
    chunks = stream_mib * MIB // chunk_bytes
    lag = int(lag_mib * MIB // chunk_bytes)
    lags = [f * lag // followers for f in range(1, followers + 1)]
    missed = 0.0
    for step in range(chunks + lag):
        if step < chunks:
            cache.access(step % group, ("X", step), chunk_bytes, False)
            if side:
                cache.access(step % group, ("Q", step), chunk_bytes // 2, False)
                cache.access(step % group, ("O", step), chunk_bytes // 2, True)
        for f, behind in enumerate(lags, start=1):
            chunk = step - behind
            if 0 <= chunk < chunks:
                missed += cache.access(f * group + chunk % group, ("X", chunk), chunk_bytes, False)
    return missed / (chunks * chunk_bytes)


def main() -> None:
    for (group, followers, side), measured in sorted(measured_rows().items()):
        lags = [lag for lag in sorted(measured) if lag <= 64]  # a lag past half the stream is not kept throughout
        print(f"{group} CTAs per group, {followers} follower group(s){', side traffic' if side else ''}; lags "
              f"{' / '.join(map(str, lags))} MiB")
        print("  GPU:", " / ".join(f"{measured[lag]:.2f}" for lag in lags))
        for name, make in MODELS:
            row = [replay(make(), lag, followers, group, 16 * 1024, 128, side) for lag in lags]
            error = sum(abs(m - max(measured[lag], 0.0)) for m, lag in zip(row, lags))
            print(f"  {name}:", " / ".join(f"{m:.2f}" for m in row), f"(summed |model - GPU| {error:.2f})", flush=True)


if __name__ == "__main__":
    main()
