"""Per-API request budgets that hold across runs in one process.

A budget is a set of sliding windows (per second, minute, hour, day). Budgets live in a process-wide registry
keyed by API name, so the in-process executor, sensors and several runs in one process share one budget, as
the API's own counter does. Waiting for a short window is fine; when only a long window (hour, day) would
admit the request, we raise ``RateLimited`` so the run ends as "retry later" instead of sleeping for hours.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from resources.errors import RateLimited


@dataclass(frozen=True)
class BudgetLimits:
    per_second: float | None = None
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None

    def windows(self) -> list[tuple[float, int]]:
        """(window seconds, max requests in it). A fractional per-second rate becomes one request per 1/rate s."""
        out: list[tuple[float, int]] = []
        if self.per_second:
            if self.per_second >= 1:
                out.append((1.0, int(self.per_second)))
            else:
                out.append((1.0 / self.per_second, 1))
        if self.per_minute:
            out.append((60.0, self.per_minute))
        if self.per_hour:
            out.append((3600.0, self.per_hour))
        if self.per_day:
            out.append((86400.0, self.per_day))
        return out


class RequestBudget:
    def __init__(self, api: str, limits: BudgetLimits, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, max_wait: float = 120.0):
        self.api = api
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self.max_wait = max_wait
        self._windows = [(length, cap, deque()) for length, cap in limits.windows()]
        self._lock = threading.Lock()
        self.spent = 0

    def acquire(self) -> None:
        """Block until one more request fits every window, then count it."""
        while True:
            with self._lock:
                now = self._clock()
                wait = 0.0
                for length, cap, stamps in self._windows:
                    while stamps and stamps[0] <= now - length:
                        stamps.popleft()
                    if len(stamps) >= cap:
                        wait = max(wait, stamps[0] + length - now)
                if wait <= 0:
                    for _, _, stamps in self._windows:
                        stamps.append(now)
                    self.spent += 1
                    return
            if wait > self.max_wait:
                raise RateLimited(self.api, f"request budget spent; next request allowed in {wait:.0f} s",
                                  retry_after=wait)
            self._sleep(wait)


_registry: dict[str, RequestBudget] = {}
_registry_lock = threading.Lock()


def budget_for(api: str, limits: BudgetLimits) -> RequestBudget:
    """The process-wide budget for ``api``. Changing the limits replaces it (config changed), else it is shared."""
    with _registry_lock:
        current = _registry.get(api)
        if current is None or current.limits != limits:
            current = RequestBudget(api, limits)
            _registry[api] = current
        return current


def reset_budgets() -> None:
    """Forget every budget (tests)."""
    with _registry_lock:
        _registry.clear()
