"""Bandwidth servers: the shared-resource primitive of the timing model.

A `Server` is a work-conserving fluid queue: work arriving at time t takes amount / rate cycles of the
server's capacity from t on, using the idle time that earlier reservations left. Reserving returns the
completion time without creating an event, so a load that crosses HBM, L2 and the SM link costs one simpy
event, not one per stage. Over any busy period it delivers exactly `rate`, which is what bandwidth sharing
among many in-flight transfers amounts to (processor sharing gives the same total drain time for the same
work). Reservations may arrive out of time order (a load held back by its SM's in-flight window is
reserved at the future time it is admitted, before other SMs reserve at the present); the server keeps its
busy intervals so that such a future reservation does not block the idle capacity before it.
"""

from __future__ import annotations

import math
from bisect import bisect_right


class Server:
    __slots__ = ("name", "rate", "free_at", "busy_cycles", "work", "_starts", "_ends")

    #: Busy intervals remembered; beyond this the oldest idle gap is forgotten (treated as busy). Callers
    #: reserve at or after the simulation's present, so only gaps far in the past are ever dropped.
    MAX_INTERVALS = 64

    def __init__(self, name: str, rate_per_cycle: float):
        if rate_per_cycle <= 0:
            raise ValueError(f"server {name}: rate must be positive")
        self.name, self.rate = name, float(rate_per_cycle)
        self.free_at = 0.0  # end of the last busy interval
        self.busy_cycles = 0.0
        self.work = 0.0
        self._starts: list[float] = []  # disjoint busy intervals, sorted
        self._ends: list[float] = []

    def reserve(self, t: float, amount: float) -> float:
        """Queue `amount` units of work at time t; return when it completes."""
        if amount <= 0:
            return t
        duration = amount / self.rate
        self.busy_cycles += duration
        self.work += amount
        starts, ends = self._starts, self._ends
        if not ends or t > ends[-1]:  # idle at t: a new busy interval
            starts.append(t)
            ends.append(t + duration)
            if len(starts) > self.MAX_INTERVALS:
                del starts[1], ends[0]  # merge the two oldest intervals
        elif t >= starts[-1]:  # inside the last busy interval: plain FIFO queueing
            ends[-1] += duration
        else:
            return self._fill_gaps(t, duration)
        self.free_at = ends[-1]
        return self.free_at

    def _fill_gaps(self, t: float, remaining: float) -> float:
        """Serve work arriving at t, before the last busy interval began, in the idle gaps after t."""
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, t)  # intervals i.. end after t
        cur = t
        while True:
            if i == len(starts):
                finish = cur + remaining
                if i and ends[i - 1] >= cur:
                    ends[i - 1] = finish
                else:
                    starts.append(cur)
                    ends.append(finish)
                break
            begin = starts[i]
            if begin > cur:
                finish = cur + remaining
                if finish < begin:  # done inside this gap
                    if i and ends[i - 1] >= cur:
                        ends[i - 1] = finish
                    else:
                        starts.insert(i, cur)
                        ends.insert(i, finish)
                    break
                remaining -= begin - cur  # fill the gap: interval i now begins at cur
                if i and ends[i - 1] >= cur:
                    ends[i - 1] = ends[i]
                    del starts[i], ends[i]
                    i -= 1
                else:
                    starts[i] = cur
                if remaining <= 0:
                    finish = begin
                    break
            cur = ends[i]
            i += 1
        self.free_at = ends[-1]
        return finish


class SharedUnit:
    """An SM execution unit (tensor pipe, MUFU, FP32 pipe, SMEM port, dispatch) shared by the ops in service.

    Warp schedulers interleave instructions from all resident warps cycle by cycle, but not fairly: they
    favour the oldest warps (greedy-then-oldest) and yield when those stall. So while ops of CTAs of different
    ages (dispatch order) contend, the oldest CTA's ops get `oldest_share` of the rate and the others share the
    rest. Ops of one CTA share evenly: its warp roles that start the same work together finish together
    (FlashAttention-3 needs its ping-pong barriers to stagger its warpgroups). A stand-in job (a sampled
    loop's skipped iterations, spread over its jump) yields to its own CTA's real ops: the iterations it
    stands for would have interleaved with its sibling roles' (FlashAttention-3's warpgroups take the tensor
    core in turn), not shared the unit with them. With 0.5 and two CTAs this is plain processor sharing, under
    which two co-resident CTAs keep whatever offset they have, and FlashAttention-2's pace depends on it (d = 128:
    7312 cycles per iteration in lockstep, 4752-5632 at 0.14-0.5 iterations apart): CTAs that start tied stay
    tied. A share just over 0.5 (the h200's 0.51) breaks such ties: the younger falls behind slowly, and the pair
    slides through its offsets (2% of a CTA per CTA at 128k tokens; 0.6 slid 20%).
    """

    __slots__ = ("env", "name", "rate", "oldest_share", "busy_cycles", "work", "_jobs", "_shares", "_last",
                 "_generation", "_capped", "_stand_ins")

    def __init__(self, env, name: str, rate_per_cycle: float, oldest_share: float = 0.5):
        if rate_per_cycle <= 0:
            raise ValueError(f"unit {name}: rate must be positive")
        self.env, self.name, self.rate = env, name, float(rate_per_cycle)
        self.oldest_share = oldest_share
        self.busy_cycles = 0.0
        self.work = 0.0
        # completion event -> [remaining work, age rank of its CTA (lower: older), cap, stand-in]
        self._jobs: dict = {}
        self._shares: list = []  # _served() of the jobs now in service (they change only where it is renewed)
        self._last = 0.0
        self._generation = 0
        self._capped = 0  # jobs in service with a cap below 1
        self._stand_ins = 0  # stand-in jobs in service

    def submit(self, amount: float, age: int = 0, cap: float = 1.0, stand_in: bool = False):
        """Start `amount` units of work now for a CTA of age rank `age` (dispatch order, lower is older);
        returns a simpy event that fires when it is done. A job with `cap` < 1 never takes more than that
        fraction of the rate (a steady demand spread over time, such as a loop's skipped iterations); what
        it leaves goes to the others. A `stand_in` job (skipped iterations) is served only while no real job
        of its CTA is."""
        if not 0.0 < cap <= 1.0:
            raise ValueError(f"unit {self.name}: a job's cap must be in (0, 1], got {cap}")
        event = self.env.event()
        if amount <= 0:
            event.succeed()
            return event
        self.work += amount
        if not self._jobs and cap == 1.0 and not stand_in:  # an idle unit: the job alone takes the whole rate
            self._last = self.env.now
            job = [amount, age, cap, stand_in]
            self._jobs[event] = job
            self._generation += 1
            self._shares = [(job, 1.0)]
            self._wake_after(max(1, math.ceil(amount / self.rate - 1e-9)))
            return event
        self._advance()
        self._jobs[event] = [amount, age, cap, stand_in]
        self._capped += cap < 1.0
        self._stand_ins += stand_in
        self._schedule()
        return event

    def _served(self) -> list:
        """(job, its share of the rate) for every job in service."""
        jobs = self._jobs.values()
        if self._stand_ins:
            real_ages = {job[1] for job in jobs if not job[3]}
            served, waiting = [], []
            for job in jobs:
                (waiting if job[3] and job[1] in real_ages else served).append(job)
            if waiting:
                return self._shares_by_age(served) + [(job, 0.0) for job in waiting]
        return self._shares_by_age(jobs)

    def _shares_by_age(self, jobs) -> list:
        n = len(jobs)
        if n == 1:
            return [(job, 1.0) for job in jobs]
        oldest = min(job[1] for job in jobs)
        first = sum(1 for job in jobs if job[1] == oldest)
        if first == n:
            return [(job, 1.0 / n) for job in jobs]
        old, young = self.oldest_share / first, (1.0 - self.oldest_share) / (n - first)
        return [(job, old if job[1] == oldest else young) for job in jobs]

    def _capped_shares(self) -> list:
        """_served() with every capped job held to its cap; what it leaves goes to the other jobs of its CTA
        (the CTA keeps its priority), else to all jobs below their caps, in proportion to their shares (evenly
        when those are all 0); water filling: a job that reaches its cap that way is held too."""
        served = [[job, share] for job, share in self._served()]
        # a stand-in held at 0 waits for its CTA's real work: it takes nothing that capped jobs leave
        waiting = {id(entry[0]) for entry in served if entry[0][3] and entry[1] == 0.0}
        while True:
            excess: dict = {}
            for entry in served:
                if entry[1] > entry[0][2]:
                    excess[entry[0][1]] = excess.get(entry[0][1], 0.0) + entry[1] - entry[0][2]
                    entry[1] = entry[0][2]
            if sum(excess.values()) <= 1e-12:
                return [(job, share) for job, share in served]
            spread = False
            for age, amount in excess.items():
                takers = [e for e in served if e[0][1] == age and e[1] < e[0][2] and id(e[0]) not in waiting] or \
                         [e for e in served if e[1] < e[0][2] and id(e[0]) not in waiting]
                if not takers:
                    continue
                spread = True
                total = sum(e[1] for e in takers)
                for e in takers:
                    e[1] += amount * (e[1] / total if total > 0 else 1.0 / len(takers))
            if not spread:  # every job is at its cap: the unit is partly idle
                return [(job, share) for job, share in served]

    def settle(self) -> None:
        """Count the work still in service as done now (a launch ends with its CTAs; stand-in work of a
        loop-sampling jump may outlast them) and drop it, so that the unit's busy cycles are complete."""
        self._advance()
        for job in self._jobs.values():
            self.busy_cycles += job[0] / self.rate
        self._jobs.clear()
        self._capped = self._stand_ins = 0
        self._shares = []
        self._generation += 1

    def _advance(self) -> None:
        now = self.env.now
        if self._jobs and now > self._last:
            served = (now - self._last) * self.rate
            for job, share in self._shares:
                job[0] -= served * share
            self.busy_cycles += (now - self._last) * (min(1.0, sum(share for _job, share in self._shares))
                                                      if self._capped else 1.0)
        self._last = now

    def _schedule(self) -> None:
        self._generation += 1
        if not self._jobs:
            self._shares = []
            return
        self._shares = self._capped_shares() if self._capped else self._served()
        # Whole cycles (time is an integer cycle count): the first job to finish is done by then.
        self._wake_after(max(1, math.ceil(min(job[0] / share for job, share in self._shares if share > 0)
                                          / self.rate - 1e-9)))

    def _wake_after(self, delay: int) -> None:
        """Wake the unit `delay` cycles from now, unless its jobs change before (a newer generation)."""
        self.env.timeout(delay, self._generation).callbacks.append(self._wake)

    def _wake(self, timeout) -> None:
        if timeout.value != self._generation:  # the jobs changed after this wake-up was set
            return
        self._advance()
        finished = [event for event, job in self._jobs.items() if job[0] <= 1e-9]
        for event in finished:
            job = self._jobs.pop(event)
            self._capped -= job[2] < 1.0
            self._stand_ins -= job[3]
            event.succeed()
        self._schedule()
