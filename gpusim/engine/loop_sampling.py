"""Loop sampling: run the first and last iterations of a long loop, account for the middle.

A kernel announces a loop with `Loop(count)` and marks each iteration it runs. In folded mode a loop of
more than SAMPLE_ABOVE iterations runs its first WARM_ITERATIONS and last TAIL_ITERATIONS; when the first
tail iteration is marked, the role has just finished its last warm iteration, and the skipped iterations
are accounted as copies of the last MEASURED ones: the role's clock jumps by their duration and every
counter and unit busy time grows by the work the role did in them, and stand-in lines of the L2 volume they
would have touched age the cache (the same lines again when a loop walks the same data again, so that a
working set that fits L2 stays resident). The functional interpreter runs every
iteration, so results stay exact; only time and counters are extrapolated, and only from the same CTA's
own steady iterations (contention with other CTAs included, as it was measured).
"""

from __future__ import annotations

from gpusim.ops import LoopPlan

#: Loops longer than this are sampled (simulation settings, not hardware).
SAMPLE_ABOVE = 20
WARM_ITERATIONS = 10
TAIL_ITERATIONS = 2
MEASURED = 6


def plan_loop(count: int, sample: bool, data_tag=None) -> LoopPlan:
    """The iterations to run. `data_tag` names the data the loop walks (L2 stand-in lines for its skipped
    iterations); None: data of its own."""
    if not sample or count <= SAMPLE_ABOVE:
        return LoopPlan(count, range(count))
    indices = list(range(WARM_ITERATIONS)) + list(range(count - TAIL_ITERATIONS, count))
    plan = LoopPlan(count, indices)
    plan.state = {"marks": []}
    plan.state["tag"] = ("loop", data_tag if data_tag is not None else id(plan.state))
    plan.state["revisits"] = data_tag is not None
    return plan


def gap_after(plan: LoopPlan, index: int) -> int:
    """Iterations skipped just before iteration `index` (0 unless it is the first tail iteration)."""
    if plan.state is None or index != plan.count - TAIL_ITERATIONS:
        return 0
    return plan.count - TAIL_ITERATIONS - WARM_ITERATIONS
