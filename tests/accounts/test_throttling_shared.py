"""The rate limit shared by every web process (API_RATE_LIMIT_REDIS_URL): one budget per key in
Redis, whichever process counts; and, while that Redis cannot be reached, each process counts
on its own again and says so once, without the URL. The shared tests need a Redis server:
TEST_REDIS_URL (.ci/run sets it; only that database number is used)."""

import logging
import os
import secrets

import pytest
import redis
from rest_framework.test import APIClient

from accounts.api import throttling
from accounts.api.throttling import RedisKeyRateLimiter, limiter
from tests.accounts.conftest import error_of

REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs Redis (set TEST_REDIS_URL)")


@pytest.fixture
def redis_keys():
    """The test's Redis; deletes the rate keys the test names in `.created` (only those:
    other tests may be counting in the same database at the same time)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.created = []
    yield client
    for key_id, prefix in client.created:
        client.delete(f"satledger:api-rate:{key_id}:{prefix}")
    throttling.shared_limiter.cache_clear()


@needs_redis
def test_two_processes_count_against_one_budget(redis_keys):
    first, second = RedisKeyRateLimiter(REDIS_URL), RedisKeyRateLimiter(REDIS_URL)
    key, other = (7, secrets.token_hex(4)), (8, secrets.token_hex(4))
    redis_keys.created += [key, other]
    assert [first.acquire(key, "3/min"), second.acquire(key, "3/min")] == [0.0, 0.0]
    assert first.acquire(key, "3/min") == 0.0
    wait = second.acquire(key, "3/min")
    assert 19.0 < wait <= 20.0  # one request per 20 s once the burst is spent
    assert second.acquire(other, "3/min") == 0.0  # another key: its own budget
    # Forgotten once back at a full budget: the key expires after the burst's length.
    assert 0 < redis_keys.pttl(f"satledger:api-rate:7:{key[1]}") <= 60_000


@needs_redis
def test_the_api_counts_in_redis_when_configured(api, settings, redis_keys):
    settings.API_RATE_LIMIT = "3/min"
    settings.API_RATE_LIMIT_REDIS_URL = REDIS_URL
    redis_keys.created.append((api.key.pk, api.key.prefix))
    for _ in range(3):
        assert api.get("/api/v1/balance").status_code == 200
    limiter.clear()  # what this process counted itself does not matter
    response = api.get("/api/v1/balance")
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1


def test_an_unreachable_redis_falls_back_to_counting_in_the_process(
    make_user, issue_key, settings, caplog, monkeypatch
):
    settings.API_RATE_LIMIT = "2/min"
    settings.API_RATE_LIMIT_REDIS_URL = "redis://:sekret-pw@127.0.0.1:9/0"  # nothing listens
    monkeypatch.setattr(throttling, "_shared_failed_at", 0.0)
    monkeypatch.setattr(throttling, "_shared_down_until", 0.0)
    throttling.shared_limiter.cache_clear()
    tried = []
    original = RedisKeyRateLimiter.acquire

    def counting(self, key, rate):
        tried.append(key)
        return original(self, key, rate)

    monkeypatch.setattr(RedisKeyRateLimiter, "acquire", counting)
    _, plaintext = issue_key(make_user(), scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    with caplog.at_level(logging.WARNING, logger="accounts.api.throttling"):
        statuses = [client.get("/api/v1/balance").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    warnings = [r.getMessage() for r in caplog.records if r.name == "accounts.api.throttling"]
    assert len(warnings) == 1  # once, not per request
    assert "counting in this process" in warnings[0] and "sekret" not in warnings[0]
    assert len(tried) == 1  # not asked again for SHARED_RETRY_AFTER_S
    monkeypatch.setattr(throttling, "_shared_down_until", 0.0)  # the pause is over
    assert client.get("/api/v1/balance").status_code == 429
    assert len(tried) == 2
    throttling.shared_limiter.cache_clear()
