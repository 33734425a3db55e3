"""The model's L2 on run 50's pattern (validation/probe_l2_shared_side.py), to set beside the GPU's.

engine.l2.L2Cache with the h200 preset's capacity, spread and private line share, 16 KiB tiles. Per pass: fresh Q
lines read (half the side traffic), each by one SM; the shared stream read in order (132 CTAs in step: one access per
tile stands for all, the others hit); fresh O lines written, each by one SM. Prints the stream's DRAM reads per pass
over W (mean of passes 5-8) for each W and side traffic S, and the summed |model - GPU| over run 50's 20 cells (the
GPU's slightly negative shares as 0).

    python validation/model_l2_shared_side.py
"""
from gpusim.engine.l2 import L2Cache
from gpusim.hardware import get_preset

hw = get_preset("h200")
TILE = 16 * 1024
MiB = 2 ** 20
SMS = 132
#: Run 50 (data/h200_probe_2026-11-30_l2_shared_side.json): the stream's re-read share per pass at S = 0 / 4 / 8 / 16.
GPU = {16: (0.00, -0.10, 0.00, 0.28), 20: (0.00, -0.03, 0.09, 0.67), 24: (0.00, 0.06, 0.45, 0.97),
       28: (0.10, 0.49, 0.86, 1.00), 32: (0.72, 0.95, 1.00, 1.00)}


def stream_reread_share(w_mib: int, side_mib: int) -> float:
    cache = L2Cache(hw.l2_capacity_bytes, hw.l2_capacity_spread_fraction * hw.l2_capacity_bytes,
                    hw.l2_private_line_share, pseudo_lru=hw.l2_tree_pseudo_lru)
    side_tiles = int(side_mib * MiB / 2 / TILE)
    shares = []
    for p in range(8):
        for i in range(side_tiles):
            cache.insert(("Q", p, i), TILE, dirty=False, reader=i % SMS)
        missed = 0
        for i in range(int(w_mib * MiB / TILE)):
            if not cache.hit(("K", i)):
                missed += TILE
                cache.insert(("K", i), TILE, dirty=False)
        for i in range(side_tiles):
            cache.insert(("O", p, i), TILE, dirty=True, reader=i % SMS)
        shares.append(missed / (w_mib * MiB))
    return sum(shares[4:]) / 4


error = 0.0
for w, gpu in GPU.items():
    row = [stream_reread_share(w, s) for s in (0, 4, 8, 16)]
    error += sum(abs(model - max(measured, 0.0)) for model, measured in zip(row, gpu))
    print(f"W {w} MiB, side 0 / 4 / 8 / 16 MiB:", " / ".join(f"{x:.2f}" for x in row),
          "  GPU:", " / ".join(f"{x:.2f}" for x in gpu))
print(f"summed |model - GPU| over the 20 cells: {error:.2f}")
