"""Bandwidth servers: the shared-resource primitive of the timing model.

A `Server` is a FIFO fluid queue: work arriving at time t starts when the work before it has drained
and takes amount / rate cycles. Reserving returns the completion time without creating an event, so a
load that crosses HBM, L2 and the SM link costs one simpy event, not one per stage. Over any busy period
it delivers exactly `rate`, which is what bandwidth sharing among many in-flight transfers amounts to
(processor sharing gives the same total drain time for the same work).
"""

from __future__ import annotations


class Server:
    __slots__ = ("name", "rate", "free_at", "busy_cycles", "work")

    def __init__(self, name: str, rate_per_cycle: float):
        if rate_per_cycle <= 0:
            raise ValueError(f"server {name}: rate must be positive")
        self.name, self.rate = name, float(rate_per_cycle)
        self.free_at = 0.0
        self.busy_cycles = 0.0
        self.work = 0.0

    def reserve(self, t: float, amount: float) -> float:
        """Queue `amount` units of work at time t; return when it completes."""
        if amount <= 0:
            return t
        start = t if t > self.free_at else self.free_at
        duration = amount / self.rate
        self.free_at = start + duration
        self.busy_cycles += duration
        self.work += amount
        return self.free_at
