"""The per-key rate limiter (GCRA): the whole rate at once, then one request per
period/count; each key its own budget; exact under concurrent threads."""

import threading

import pytest

from accounts.api.throttling import KeyRateLimiter, parse_rate


@pytest.mark.parametrize(
    ("rate", "interval", "tolerance"),
    [
        ("3/min", 20.0, 40.0),
        ("120/minute", 0.5, 59.5),
        ("1/s", 1.0, 0.0),
        ("24/day", 3600.0, 82800.0),
    ],
)
def test_parse_rate(rate, interval, tolerance):
    assert parse_rate(rate) == pytest.approx((interval, tolerance))


def test_burst_of_the_whole_rate_then_one_per_interval():
    limiter = KeyRateLimiter()
    key = (1, "aaaa")
    assert [limiter.acquire(key, "3/min", 1000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire(key, "3/min", 1000.0) == pytest.approx(20.0)
    # refused requests are not counted: the wait does not grow
    assert limiter.acquire(key, "3/min", 1000.0) == pytest.approx(20.0)
    assert limiter.acquire(key, "3/min", 1010.0) == pytest.approx(10.0)
    assert limiter.acquire(key, "3/min", 1020.0) == 0.0
    assert limiter.acquire(key, "3/min", 1020.0) == pytest.approx(20.0)
    # after a full period of silence the whole burst is back
    assert [limiter.acquire(key, "3/min", 1100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire(key, "3/min", 1100.0) > 0


def test_rates_whose_interval_is_not_exact_in_binary_allow_the_whole_burst():
    limiter = KeyRateLimiter()
    waits = [limiter.acquire((2, "b"), "7/s", 50.0) for _ in range(8)]
    assert waits[:7] == [0.0] * 7
    assert waits[7] == pytest.approx(1 / 7)


def test_each_key_has_its_own_budget():
    limiter = KeyRateLimiter()
    assert limiter.acquire((1, "a"), "1/min", 0.0) == 0.0
    assert limiter.acquire((1, "a"), "1/min", 0.0) > 0
    assert limiter.acquire((2, "b"), "1/min", 0.0) == 0.0
    # the same id with another prefix is another key (ids repeat across test databases)
    assert limiter.acquire((1, "c"), "1/min", 0.0) == 0.0


def test_pruning_forgets_only_keys_back_at_a_full_budget(monkeypatch):
    monkeypatch.setattr("accounts.api.throttling._PRUNE_EVERY", 3)
    limiter = KeyRateLimiter()
    assert limiter.acquire((1, "busy"), "1/min", 0.0) == 0.0
    limiter.acquire((2, "idle"), "1/s", 0.0)
    limiter.acquire((3, "new"), "1/min", 30.0)  # third new key: sweep at t=30
    assert set(limiter._arrival) == {(1, "busy"), (3, "new")}
    assert limiter.acquire((1, "busy"), "1/min", 30.0) == pytest.approx(30.0)


def test_exactly_the_rate_passes_from_many_threads():
    limiter = KeyRateLimiter()
    allowed = []
    start = threading.Barrier(16)

    def hammer():
        start.wait()
        mine = sum(limiter.acquire((9, "hot"), "100/hour", 5.0) == 0.0 for _ in range(50))
        allowed.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 100
