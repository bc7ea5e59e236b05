"""Rate limit per API key (rate from settings.API_RATE_LIMIT, e.g. "120/min").

The generic cell rate algorithm (GCRA): one number per key, its theoretical arrival time. A key
may send the whole rate at once, then one request per period/count. Each request costs O(1):
DRF's SimpleRateThrottle kept a list of every request time in the window and pickled it into
the cache on each request (~0.1 ms at high rates, bench/RESULTS.md). Counted per process, like
the local-memory cache it replaces: with several web processes each one counts on its own.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from accounts.models import ApiKey

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PRUNE_EVERY = 10_000  # new keys between sweeps of keys that are back to a full budget


@lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[float, float]:
    """ "120/min" -> (emission interval, burst tolerance) in seconds."""
    count, unit = rate.split("/")
    period = float(_UNIT_SECONDS[unit[0]])
    interval = period / int(count)
    return interval, period - interval


class KeyRateLimiter:
    """Theoretical arrival times per key, shared by the threads of one process."""

    def __init__(self) -> None:
        self._arrival: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()
        self._added = 0

    def acquire(self, key: tuple[int, str], rate: str, now: float) -> float:
        """Count one request of `key` at `now` (monotonic seconds). 0.0 if it may go, else
        the seconds until it may."""
        interval, tolerance = parse_rate(rate)
        with self._lock:
            arrival = self._arrival.get(key)
            if arrival is None:
                self._added += 1
                if self._added >= _PRUNE_EVERY:
                    self._prune(now)
                arrival = now
            elif arrival < now:
                arrival = now
            ahead = arrival - now
            if ahead > tolerance + 1e-9:  # float sums of the interval may overshoot by ulps
                return ahead - tolerance
            self._arrival[key] = arrival + interval
            return 0.0

    def _prune(self, now: float) -> None:
        # A key whose arrival time has passed is indistinguishable from a new one.
        self._arrival = {key: at for key, at in self._arrival.items() if at > now}
        self._added = 0

    def clear(self) -> None:
        with self._lock:
            self._arrival.clear()


limiter = KeyRateLimiter()


class ApiKeyRateThrottle(BaseThrottle):
    """Counts requests per API key. Requests without a key are not counted here (they are
    refused before any work)."""

    def allow_request(self, request: Request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        # read per request, so settings overrides apply; the prefix tells apart keys whose
        # ids a database reused (tests)
        self._wait = limiter.acquire(
            (api_key.pk, api_key.prefix), settings.API_RATE_LIMIT, time.monotonic()
        )
        return self._wait == 0.0

    def wait(self) -> float | None:
        return self._wait
