"""The model's L2 on run 50's pattern (validation/probe_l2_shared_side.py), to set beside the GPU's.

engine.l2.L2Cache with the h200 preset's capacity and spread, 16 KiB tiles. Per pass: fresh Q lines read (half the
side traffic), the shared stream read in order (132 CTAs in step: one access per tile, the others hit), fresh O lines
written; prints the stream's DRAM reads per pass over W (mean of passes 5-8) for each W and side traffic S.

    python validation/model_l2_shared_side.py
"""
from gpusim.engine.l2 import L2Cache
from gpusim.hardware import get_preset
hw = get_preset("h200")
TILE = 16 * 1024
MiB = 2 ** 20
for w in (16, 20, 24, 28, 32):
    row = []
    for s in (0, 4, 8, 16):
        cache = L2Cache(hw.l2_capacity_bytes, hw.l2_capacity_spread_fraction * hw.l2_capacity_bytes)
        shares = []
        for p in range(8):
            for i in range(int(s * MiB / 2 / TILE)):
                cache.insert(("Q", p, i), TILE, dirty=False)
            missed = 0
            for i in range(int(w * MiB / TILE)):
                if not cache.hit(("K", i)):
                    missed += TILE
                    cache.insert(("K", i), TILE, dirty=False)
            for i in range(int(s * MiB / 2 / TILE)):
                cache.insert(("O", p, i), TILE, dirty=True)
            shares.append(missed / (w * MiB))
        row.append(sum(shares[4:]) / 4)
    print(f"W {w} MiB, side 0 / 4 / 8 / 16 MiB:", " / ".join(f"{x:.2f}" for x in row))
