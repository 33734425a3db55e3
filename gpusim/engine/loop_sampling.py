"""Loop sampling: run the first and last iterations of a long loop, account for the middle.

A kernel announces a loop with `Loop(count)` and marks each iteration it runs. In folded mode a loop of
more than SAMPLE_ABOVE iterations runs its first WARM_ITERATIONS and last TAIL_ITERATIONS; when the first
tail iteration is marked, the role has just finished its last warm iteration, and the skipped iterations
are accounted as copies of the last MEASURED ones: the role's clock jumps by their duration, every
counter grows by the work the role did in them, their SM-unit work occupies the SM's units over the jump
as steady demand (a co-resident CTA still measuring its pace meets the contention they would have caused:
with the scheduler's share for the oldest CTA at 0.6, a younger one that measured alone after the older
one's jump ran 12% fast, benchmarks/folded_vs_exact.py), and stand-in lines of the L2 volume they
would have touched age the cache (the same lines again when a loop walks the same data again, so that a
working set that fits L2 stays resident). A loop over tiles that concurrent CTAs walk too (ops.Loop.shared:
FlashAttention-3's K/V) reads its skipped tiles of shared tensors as stand-in chunks of that data instead, which
every CTA walking it reads alike: each hits or misses by what was touched in L2 since the chunk's last read (an
LRU's stack distance, engine.memory.read_stand_ins), so DRAM traffic follows the cache as it would over the whole
walk; copying the warm iterations' hits would miss a walk that outgrows L2 only later (FA3 at 98k tokens, d = 64:
1.5 passes where the full walk reads 3.9, Nsight Compute 3.4). Such a loop is always sampled, even in a last wave,
so that no CTA reads the real tiles that others stood in for. Its roles (a producer and consumer warpgroups) each
mark every iteration where they wait on nothing another role does after marking it, so that they jump side by side; a
role's stand-in work on the SM's units yields to its own CTA's real work (engine.servers.SharedUnit), as the
skipped iterations would have taken turns with its sibling roles'. The functional interpreter runs every
iteration, so results stay exact; only time and counters are extrapolated, and only from the same CTA's
own steady iterations (contention with other CTAs included, as it was measured). A one-off that passes
while a loop warms up (the write-backs of a benchmark's flush residue, engine.memory) is not steady: such a
loop warms up for MEASURED more iterations until its measured ones are clear of it (the roles of a CTA decide
together). A loop whose program loads iterations ahead (ops.Loop.lookahead) keeps that many tail iterations.
In a launch's partial last wave (all of a launch that fits in one wave), loops are not sampled while that
wave's representatives' iterations (nested loops included) stay within LAST_WAVE_FULL_ITERATIONS (a launch
of one wave) or TAIL_WAVE_FULL_ITERATIONS (the partial last wave of a launch of several): such CTAs
contend for HBM until the last one finishes, the order in which they finish builds up over the whole loop,
and a last-wave CTA's first iterations still share HBM with the wave before it, so a jump at their pace
misjudges the rest (benchmarks/folded_vs_exact.py: one-wave decode -3% to -4% against exact with sampling,
within 1% without; the 1.2-wave split-K decode of the campaign at B = 8, 64k: 653 us sampled, 509 us not,
526 us measured).
"""

from __future__ import annotations

from gpusim.ops import LoopPlan

#: Loops longer than this are sampled (simulation settings, not hardware). Two co-resident CTAs slide through each
#: other's phases over tens of iterations (hardware.OLDEST_CTA_ISSUE_SHARE), so a loop's pace can change by 20-40%
#: within 50 iterations, which a few measured early ones miss: SDPA's decode kernel at 64 sequences, 4k tokens
#: (64-iteration loops) ran -3.0% against exact mode sampled above 20 iterations, +0.2% in full.
SAMPLE_ABOVE = 64
WARM_ITERATIONS = 10
TAIL_ITERATIONS = 2
MEASURED = 6
#: A launch of one wave runs innermost loops in full while (representatives x iterations) stays under this.
LAST_WAVE_FULL_ITERATIONS = 2048
#: The same for the partial last wave of a launch of several waves. It starts while the wave before still runs and
#: speeds up as that one drains, so the pace of its first iterations is not its pace: SDPA's FA2 decode kernel at
#: 64 sequences, 4k tokens (248 CTAs after 264) ran +4.2% against exact mode sampled, +0.4% in full (with the
#: scheduler's share at 0.6 and loops sampled from 21 iterations). (A one-wave
#: launch keeps the smaller budget: FA3 at 131k tokens, 4 representatives of 1024 iterations, stays sampled.)
TAIL_WAVE_FULL_ITERATIONS = 4096


class FullRuns:
    """Which loops one warp role of a CTA in a launch's partial last wave runs in full: while its iterations
    stay within its share of LAST_WAVE_FULL_ITERATIONS (split among that wave's `last_wave_reps`
    representatives; 0: not in it, every long loop is sampled), and only loops with no loop inside: a loop
    announced inside a full-run one turns that one back into a sampled loop (it is still in its first
    iteration, so the kernel's walk over its indices takes the sampled ones). `budget`: LAST_WAVE_FULL_ITERATIONS,
    or TAIL_WAVE_FULL_ITERATIONS for the partial last wave of a launch of several waves. A loop that walks data again
    (`data_tag`: an inner loop re-run by an outer one) is always sampled, so that all its runs share the same
    L2 stand-in lines. Roles with the same loops decide alike."""

    def __init__(self, last_wave_reps: int, budget: int = LAST_WAVE_FULL_ITERATIONS):
        self.left = budget // last_wave_reps if last_wave_reps else 0
        self.open: tuple | None = None  # (plan, data_tag) of the full-run loop in progress

    def plan(self, count: int, sample: bool, data_tag=None, lookahead: int = 0, shared: bool = False) -> LoopPlan:
        if self.open is not None:
            outer, outer_tag = self.open
            self.open = None
            self.left += outer.count
            _sample(outer, outer_tag)
        if sample and data_tag is None and not shared and SAMPLE_ABOVE < count <= self.left:
            self.left -= count
            plan = LoopPlan(count, range(count), lookahead)
            self.open = (plan, data_tag)
            return plan
        return plan_loop(count, sample, data_tag, lookahead, shared)

    def marked(self, plan: LoopPlan, index: int) -> None:
        """The role started iteration `index` of `plan`: a full-run loop's last one closes it."""
        if self.open is not None and self.open[0] is plan and index == plan.count - 1:
            self.open = None


def plan_loop(count: int, sample: bool, data_tag=None, lookahead: int = 0, shared: bool = False) -> LoopPlan:
    """The iterations to run. `data_tag` names the data the loop walks (L2 stand-in lines for its skipped
    iterations); None: data of its own. `lookahead`: iterations the program loads ahead; `shared`: the loop
    walks tiles concurrent CTAs walk too (ops.Loop)."""
    plan = LoopPlan(count, range(count), lookahead)
    if not sample or count <= SAMPLE_ABOVE:
        return plan
    return _sample(plan, data_tag, shared)


def _sample(plan: LoopPlan, data_tag, shared: bool = False) -> LoopPlan:
    """Make `plan` run its warm and tail iterations only (in place: a kernel may be iterating its indices).
    The tail is at least the loop's lookahead long: a program that loads L iterations ahead issues no load in
    its last L iterations, and those must not be the measured ones."""
    count = plan.count
    tail = max(TAIL_ITERATIONS, plan.lookahead)
    plan.indices[:] = list(range(WARM_ITERATIONS)) + list(range(count - tail, count))
    plan.state = {"marks": [], "warm": WARM_ITERATIONS, "tail": tail}
    plan.state["tag"] = ("loop", data_tag if data_tag is not None else id(plan.state))
    plan.state["revisits"] = data_tag is not None
    plan.state["shared"] = shared
    return plan


def gap_after(plan: LoopPlan, index: int) -> int:
    """Iterations skipped just before iteration `index` (0 unless it is the first tail iteration)."""
    if plan.state is None or index != plan.count - plan.state["tail"]:
        return 0
    return plan.count - plan.state["tail"] - plan.state["warm"]


def is_warm_decision(plan: LoopPlan, index: int) -> bool:
    """Iteration `index` of a sampled loop is the last at which more warm-up iterations can be added: the last
    warm one, or earlier by the loop's lookahead (the program loads the iterations after it ahead of time, and
    what the first tail position holds must not change once its load has gone out)."""
    return plan.state is not None and index == plan.state["warm"] - max(1, plan.lookahead)


def extend_warm(plan: LoopPlan) -> bool:
    """Run MEASURED more warm iterations before the tail (in place: the kernel is iterating the indices, at
    most at the last warm one), so that the pace is measured over later iterations; False when no iterations
    are left to skip."""
    warm = plan.state["warm"]
    more = min(MEASURED, plan.count - plan.state["tail"] - warm)
    if more <= 0:
        return False
    plan.indices[warm:warm] = range(warm, warm + more)
    plan.state["warm"] = warm + more
    return True
