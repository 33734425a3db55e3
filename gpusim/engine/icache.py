"""The SM's instruction cache: which code paths its resident warps run, and whether together they outgrow it.

Kernels name the code they run with CodePath ops: a loop body (walked again every iteration) or straight-line
code run once (a prologue, a CTA's first tiles, an epilogue), which streams through the cache. On the H200
(validation/README.md runs 23 and 36), with one warp of each of two code paths per sub-partition:
- two loop bodies fit together up to 16 KiB each (1.06 cycles per instruction per sub-partition) and thrash from
  20 KiB each (2.02-2.28, from call to call): every instruction is fetched again, at the SM's fetch rate;
- a loop body of up to 16 KiB keeps running at full rate beside a stream of straight-line code, and one of 24 KiB
  thrashes with it: a stream holds `instruction_stream_window_bytes` of the cache;
- two streams thrash (two 64 KiB bodies: 2.15-2.39), and one stream alone is prefetched (one 64 KiB body: 1.1).
  Straight-line code run once misses whatever its length (the CTA that ran it last did so a CTA ago), so two
  streams of any length are two streams for the prefetcher; a short one holds only its own size beside a loop.
  A kernel whose whole code (every path run on the SM) fits the cache never misses.
"""

from __future__ import annotations

from gpusim.hardware import INSTRUCTION_BYTES


class InstructionCache:
    """The code paths an SM's resident roles run now: name -> [bytes it holds of the cache, whether it streams,
    roles running it]."""

    __slots__ = ("capacity_bytes", "stream_window_bytes", "_paths", "_code_bytes", "thrashing")

    def __init__(self, capacity_bytes: int, stream_window_bytes: int):
        self.capacity_bytes, self.stream_window_bytes = capacity_bytes, stream_window_bytes
        self._paths: dict[str, list] = {}
        self._code_bytes: dict[str, int] = {}  # every path run on the SM so far: while they all fit, none misses
        self.thrashing = False

    def switch(self, old: tuple | None, new: tuple | None) -> None:
        """A role leaves path `old` and enters `new`: (name, instructions, loops) or None. A loop body larger
        than the cache streams through it as straight-line code does; a stream holds the window, or less if it is
        shorter."""
        paths = self._paths
        if old is not None:
            entry = paths[old[0]]
            entry[2] -= 1
            if not entry[2]:
                del paths[old[0]]
        if new is not None:
            name, instructions, loops = new
            nbytes = instructions * INSTRUCTION_BYTES
            self._code_bytes[name] = nbytes
            stream = not loops or nbytes > self.capacity_bytes
            paths.setdefault(name, [min(nbytes, self.stream_window_bytes) if stream else nbytes, stream, 0])[2] += 1
        streams = sum(1 for _, stream, _ in paths.values() if stream)
        footprint = sum(held for held, _, _ in paths.values())
        self.thrashing = len(paths) > 1 and (streams > 1 or footprint > self.capacity_bytes) \
            and sum(self._code_bytes.values()) > self.capacity_bytes
