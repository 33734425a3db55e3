"""Which SMs of an H200 share a GPC, and how fast each streams from HBM in a full wave (run 27, issue #8).

Builds `probe_gpc_map.cu` with nvcc and runs it: cudaOccupancyMaxActiveClusters for cluster sizes 1-16; launches of
one CTA per SM in clusters of 16 and 8 (a cluster's CTAs share a GPC); and launches of two CTAs of 1024 threads per
SM; every CTA streams its own 8 MiB and stamps %smid, %clusterid and %globaltimer. Prints the probe's JSON lines,
then the GPCs (SMs joined by sharing a cluster) with the median duration of their SMs' CTAs in the speed launches.

    python validation/probe_gpc_map.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_gpc_map.json`.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys

from ncu_profile import cuda_probe_main


def gpcs(rows: list[dict]) -> list[dict]:
    """SMs joined through shared clusters (union-find), each group with its SMs' median first-wave duration."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    durations: dict[int, list[float]] = {}
    for row in rows:
        if "launch" not in row:
            continue
        by_cluster: dict[int, list[int]] = {}
        first_wave_end = min(end for _sm, _cl, start, end in row["ctas"])
        for sm, cluster, start, end in row["ctas"]:
            find(sm)
            if row["phase"] == "membership":
                by_cluster.setdefault(cluster, []).append(sm)
            elif start < first_wave_end:  # started in the first wave
                durations.setdefault(sm, []).append((end - start) / 1e3)
        for members in by_cluster.values():
            for other in members[1:]:
                parent[find(other)] = find(members[0])
    groups: dict[int, list[int]] = {}
    for sm in parent:
        groups.setdefault(find(sm), []).append(sm)
    out = []
    for members in sorted(groups.values(), key=len, reverse=True):
        per_sm = [statistics.median(durations[sm]) for sm in members if sm in durations]
        out.append({"sms": sorted(members), "count": len(members),
                    "median_duration_us": statistics.median(per_sm) if per_sm else None})
    return out


if __name__ == "__main__":
    status = cuda_probe_main(__doc__, "probe_gpc_map.cu", "gpc_map")
    out_dir = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "validation/data"
    paths = sorted(glob.glob(os.path.join(out_dir, "h200_probe_*_gpc_map.json")))
    if paths:
        with open(paths[-1]) as f:
            for group in gpcs(json.load(f)["rows"]):
                print(group["count"], "SMs, median duration", group["median_duration_us"], "us:", group["sms"])
    sys.exit(status)
