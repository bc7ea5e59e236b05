"""Rate limit per API key (rate from settings.API_RATE_LIMIT, e.g. "120/min").

The generic cell rate algorithm (GCRA): one number per key, its theoretical arrival time. A key
may send the whole rate at once, then one request per period/count. Each request costs O(1):
DRF's SimpleRateThrottle kept a list of every request time in the window and pickled it into
the cache on each request (~0.1 ms at high rates, bench/RESULTS.md).

By default counted per process: with several web processes each one counts on its own (a key
gets up to processes x the rate). With API_RATE_LIMIT_REDIS_URL the arrival times live in
Redis and every process counts against one budget per key, for one more round trip per
request; while that Redis cannot be reached, each process counts on its own again.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from accounts.models import ApiKey

logger = logging.getLogger(__name__)

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


class RedisKeyRateLimiter:
    """The same algorithm with the arrival times in Redis, one budget per key for every
    process: a script reads and moves a key's arrival time atomically, on Redis' own clock (the
    processes' clocks need not agree). Keys expire once back at a full budget."""

    # KEYS[1]: the key's arrival time (µs). ARGV: interval, tolerance (µs). Returns the µs to
    # wait, 0 if the request may go (then counted).
    _SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local arrival = tonumber(redis.call('GET', KEYS[1])) or now
if arrival < now then arrival = now end
local ahead = arrival - now
if ahead > tolerance then return ahead - tolerance end
arrival = arrival + interval
redis.call('SET', KEYS[1], arrival, 'PX', math.floor((arrival - now) / 1000) + 1)
return 0
"""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(self._SCRIPT)

    def acquire(self, key: tuple[int, str], rate: str) -> float:
        """As KeyRateLimiter.acquire, at Redis' time. Raises redis.RedisError when Redis
        cannot answer."""
        interval, tolerance = parse_rate(rate)
        wait_us = self._script(
            keys=[f"satledger:api-rate:{key[0]}:{key[1]}"],
            args=[round(interval * 1e6), round(tolerance * 1e6)],
        )
        return int(wait_us) / 1e6


@lru_cache(maxsize=4)
def shared_limiter(url: str) -> RedisKeyRateLimiter:
    return RedisKeyRateLimiter(url)


# After Redis failed to answer, requests count in the process for this long before it is
# tried again: a Redis that drops packets would otherwise cost every request its timeout.
SHARED_RETRY_AFTER_S = 5.0
_shared_failed_at = 0.0  # when the last "shared rate limit unavailable" was logged
_shared_down_until = 0.0


def _acquire(key: tuple[int, str], rate: str) -> float:
    global _shared_failed_at, _shared_down_until
    url = settings.API_RATE_LIMIT_REDIS_URL
    now = time.monotonic()
    if url and now >= _shared_down_until:
        import redis

        try:
            return shared_limiter(url).acquire(key, rate)
        except redis.RedisError as error:
            _shared_down_until = now + SHARED_RETRY_AFTER_S
            if now - _shared_failed_at > 60:  # once a minute, not per request
                _shared_failed_at = now
                # the error's class only: its text may hold the URL and its password
                logger.warning(
                    "shared API rate limit unavailable (%s); counting in this process",
                    type(error).__name__,
                )
    return limiter.acquire(key, rate, now)


class ApiKeyRateThrottle(BaseThrottle):
    """Counts requests per API key. Requests without a key are not counted here (they are
    refused before any work)."""

    def allow_request(self, request: Request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        # read per request, so settings overrides apply; the prefix tells apart keys whose
        # ids a database reused (tests)
        self._wait = _acquire((api_key.pk, api_key.prefix), settings.API_RATE_LIMIT)
        return self._wait == 0.0

    def wait(self) -> float | None:
        return self._wait
