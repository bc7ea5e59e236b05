"""scripts/serve, the production web server (granian + a connection pool per process), over
real HTTP against the test database: it serves the API, and however many requests run at once
and however often granian starts and stops its threads, it holds at most workers x pool
connections. With API_RATE_LIMIT_REDIS_URL its processes share one rate budget per key."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from django.db import connection

from accounts.keycache import LISTENER_APPLICATION_NAME
from accounts.services import api_key_issue

pytestmark = pytest.mark.postgres_only

REPO = Path(__file__).resolve().parent.parent
APP_NAME = "satledger-serve-test"
WORKERS, THREADS = 2, 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_connections(application_name: str = APP_NAME) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def server(committed_db):
    yield from _serve({})


def _serve(extra_env: dict[str, str]):
    settings_dict = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
        f"{settings_dict['PORT']}/{settings_dict['NAME']}",
        "PGAPPNAME": APP_NAME,  # libpq names the server's connections
        "SECRET_KEY": "serve-test-" + "x" * 50,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "API_RATE_LIMIT": "1000000/s",  # the test counts connections, not requests
        "PYTHON": sys.executable,
        "GRANIAN_HOST": "127.0.0.1",
        "GRANIAN_PORT": str(port),
        "GRANIAN_WORKERS": str(WORKERS),
        "GRANIAN_BLOCKING_THREADS": str(THREADS),
        "GRANIAN_BLOCKING_THREADS_IDLE_TIMEOUT": "5",  # the shortest: threads come and go
        **extra_env,
    }
    process = subprocess.Popen(
        [str(REPO / "scripts" / "serve")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base_url + "/api/v1/balance", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("scripts/serve did not start:\n" + process.stdout.read())
            time.sleep(0.2)
    yield base_url
    process.terminate()
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output


def test_serves_the_api_with_bounded_connections(server, make_user):
    user = make_user()
    _, plaintext = api_key_issue(user=user, name="serve", scopes=["read"])
    headers = {"Authorization": f"Bearer {plaintext}"}

    answer = httpx.get(server + "/api/v1/balance", headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"balance_msat": 0, "pending_msat": 0}
    anonymous = httpx.get(server + "/api/v1/balance")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "authentication_required"

    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=server, headers=headers) as http:
            statuses.extend(http.get("/api/v1/balance").status_code for _ in range(15))

    for _burst in range(2):  # the second after granian stopped the idle threads
        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert _server_connections() <= WORKERS * THREADS
        time.sleep(7)
    assert Counter(statuses) == {200: 2 * 12 * 15}
    assert _server_connections() <= WORKERS * THREADS
    # Besides the pools: the API key cache's listener, one per process that served a key.
    assert 1 <= _server_connections(LISTENER_APPLICATION_NAME) <= WORKERS


REDIS_URL = os.environ.get("TEST_REDIS_URL", "")


@pytest.mark.skipif(not REDIS_URL, reason="needs Redis (set TEST_REDIS_URL)")
def test_the_processes_share_one_rate_limit_per_key(committed_db, make_user):
    import redis

    user = make_user()
    key, plaintext = api_key_issue(user=user, name="serve-rate", scopes=["read"])
    headers = {"Authorization": f"Bearer {plaintext}"}
    server = _serve({"API_RATE_LIMIT": "10/min", "API_RATE_LIMIT_REDIS_URL": REDIS_URL})
    base_url = next(server)
    try:
        statuses: list[int] = []

        def client() -> None:
            # a new connection per request, so both processes take some
            statuses.extend(
                httpx.get(base_url + "/api/v1/balance", headers=headers).status_code
                for _ in range(5)
            )

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # the whole budget once, not once per process (each alone would let 10 through)
        assert Counter(statuses) == {200: 10, 429: 30}
    finally:
        next(server, None)
        redis.Redis.from_url(REDIS_URL).delete(f"satledger:api-rate:{key.pk}:{key.prefix}")
