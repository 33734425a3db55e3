"""How many of a trailing group's re-reads miss the engine's L2, replayed tile by tile (steady_state.Drift).

Folded mode extrapolates a long launch from its first waves; the CTAs that share an SM move apart over the skipped
waves, and the group behind re-reads each tile of the stream the group ahead fetched 2 o of the stream earlier (o: how
far apart they are, in streams). Whether that re-read hits depends on the L2's victim policy, not only on that
distance: an LRU keeps every line younger than its capacity (a normal around it, the L2's gradual edge), but a tree
pseudo-LRU whose bits the re-reads scatter evicts younger lines too (engine.l2.L2Cache._victim_rank), so a group a
tenth of a stream behind already re-reads some. This replays the two groups' walk through an L2Cache built like the
engine's and counts the trailing group's misses. A launch simulated in full (validation/model_partner_offsets.py)
re-reads that much more than the normal's share: FA2 at 131k tokens, d = 64, 4 / 8 heads, 0.70 / 1.55 GB read where
the extrapolation with the normal read 0.58 / 1.29 (thirty-first session).
"""

from __future__ import annotations

from functools import lru_cache

from gpusim.engine.l2 import SHARED, L2Cache

#: Tiles the replayed stream is cut into (a simulation setting: enough that the L2's classes each hold several
#: hundred, few enough that a replay costs a few milliseconds).
STREAM_TILES = 512
#: Walks of the stream by the leading group: the first fills the L2; the trailing group's misses are counted over the
#: rest.
WALKS = 3
#: Offsets are replayed on this grid (in streams), so that a launch's waves share their replays.
OFFSET_STEP = 0.02


@lru_cache(maxsize=1024)
def _trailing_miss_share(capacity_bytes: int, spread_bytes: float, pseudo_lru: bool, stream_bytes: float,
                         offset_steps: int) -> float:
    tile_bytes = stream_bytes / STREAM_TILES
    cache = L2Cache(capacity_bytes, spread_bytes, pseudo_lru=pseudo_lru)
    lag = round(offset_steps * OFFSET_STEP * STREAM_TILES)
    misses = counted = 0
    for step in range(WALKS * STREAM_TILES):
        for tile, trailing in ((step % STREAM_TILES, False), ((step - lag) % STREAM_TILES, True)):
            if trailing and step < lag:
                continue
            hit = cache.hit(tile, SHARED)
            if not hit:
                cache.insert(tile, tile_bytes, dirty=False)
            if trailing and step >= STREAM_TILES:
                counted += 1
                misses += not hit
    return misses / counted if counted else 0.0


def trailing_miss_share(cache: L2Cache, stream_bytes: float, offset: float) -> float:
    """The share of the tiles of a stream of `stream_bytes` that a group of CTAs `offset` streams behind another
    re-reads from DRAM, both walking it in order through an L2 like `cache` (its capacity, spread and victim policy;
    the lines are shared, so they take their whole bytes)."""
    if offset <= 0.0 or stream_bytes <= 0.0:
        return 0.0
    steps = min(round(offset / OFFSET_STEP), round(0.5 / OFFSET_STEP))
    return _trailing_miss_share(cache.capacity_bytes, cache.spread_bytes, cache.pseudo_lru, stream_bytes, steps)
