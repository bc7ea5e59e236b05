"""The API key cache (accounts/keycache.py) never lets a key outlive its revocation: changes
made anywhere (this process, another connection, raw SQL) reach it through PostgreSQL's
notifications; while its listener is down it is not used; a lookup that raced a
notification is not kept. Committed transactions throughout (notifications are sent at
commit), on PostgreSQL (SQLite has no notifications and no cache)."""

import contextlib
import os
import socket
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts import keycache
from accounts.keycache import CHANNEL, api_key_cache
from accounts.models import ApiKey
from accounts.services import api_key_issue, api_key_revoke
from tests.pg import other_connection

pytestmark = pytest.mark.usefixtures("committed_db")

BALANCE = "/api/v1/balance"
WAIT_S = 5.0


def eventually(check, timeout_s: float = WAIT_S, every_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()


@pytest.fixture
def cache(settings):
    if connection.vendor != "postgresql":
        pytest.skip("the cache needs PostgreSQL's notifications")
    settings.API_KEY_CACHE = True
    api_key_cache.get("start the listener")
    assert eventually(lambda: api_key_cache.listening), "the listener did not start"
    yield api_key_cache
    api_key_cache.stop()


class BlackholeProxy:
    """A TCP relay to PostgreSQL that can stop relaying without closing anything: a connection
    through it then neither answers nor fails, like one a firewall dropped (its kernel still
    acknowledges every packet, so keepalives cannot tell either)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.relaying = threading.Event()
        self.relaying.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            self.relaying.wait()  # blackholed: the bytes go nowhere, nothing is closed
            if not data or self.closed:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def blackhole(self) -> None:
        self.relaying.clear()

    def close(self) -> None:
        self.closed = True
        self.relaying.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def cache_behind_proxy(settings, monkeypatch):
    """The cache whose listener reaches PostgreSQL through a BlackholeProxy; heartbeats every
    0.1 s, trust for 2 s after each."""
    if connection.vendor != "postgresql":
        pytest.skip("the cache needs PostgreSQL's notifications")
    params = keycache._listener_params()
    if str(params.get("host", "")).startswith("/") or not params.get("host"):
        pytest.skip("the proxy relays TCP; the database is on a Unix socket")
    proxy = BlackholeProxy((params["host"], int(params.get("port") or 5432)))
    monkeypatch.setattr(
        keycache, "_listener_params", lambda: {**params, "host": "127.0.0.1", "port": proxy.port}
    )
    monkeypatch.setattr(keycache, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(keycache, "ALIVE_FOR_S", 2.0)
    monkeypatch.setattr(keycache, "NOTIFY_WAIT_S", 0.05)
    settings.API_KEY_CACHE = True
    api_key_cache.get("start the listener")
    assert eventually(lambda: api_key_cache.listening), "the listener did not start"
    yield api_key_cache, proxy
    api_key_cache.stop()
    proxy.close()


@pytest.fixture
def client_of(make_user):
    def make(scopes=("read", "receive", "send")):
        user = make_user()
        key, plaintext = api_key_issue(user=user, name="cached", scopes=scopes)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        client.user, client.key = user, key
        return client

    return make


def key_reads(client) -> int:
    """Requests the balance; returns how many statements used the API key table."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(BALANCE)
    assert response.status_code == 200, response.content
    return sum("accounts_apikey" in query["sql"] for query in queries.captured_queries)


def test_a_key_is_read_once_then_served_from_the_cache(cache, client_of):
    client = client_of()
    assert key_reads(client) == 2  # read, then kept; its first use recorded (one write)
    assert key_reads(client) == 0  # neither read nor written again within the minute
    assert key_reads(client) == 0


def test_revoked_in_this_process_is_refused_at_once(cache, client_of):
    client = client_of()
    assert client.get(BALANCE).status_code == 200
    api_key_revoke(api_key=client.key)
    response = client.get(BALANCE)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (
            "UPDATE accounts_apikey SET revoked_at = now() WHERE id = %(key)s",
            401,
            "invalid_api_key",
        ),
        (
            "UPDATE accounts_apikey SET scopes = '[\"send\"]' WHERE id = %(key)s",
            403,
            "scope_required",
        ),
        ("UPDATE accounts_user SET is_active = false WHERE id = %(user)s", 401, "invalid_api_key"),
        ("DELETE FROM accounts_apikey WHERE id = %(key)s", 401, "invalid_api_key"),
    ],
    ids=["revoked", "rescoped", "user disabled", "deleted"],
)
def test_a_change_from_another_connection_reaches_the_cache(cache, client_of, change, status, code):
    client = client_of()
    assert client.get(BALANCE).status_code == 200
    assert key_reads(client) == 0  # cached
    with other_connection() as other:
        other.execute(change, {"key": client.key.pk, "user": client.user.pk})

    def refused() -> bool:
        response = client.get(BALANCE)
        return response.status_code == status and response.json()["error"]["code"] == code

    assert eventually(refused), f"the cache still accepted the key after: {change}"


def test_only_changes_that_matter_notify(cache, client_of):
    client = client_of()
    with other_connection() as listener, other_connection() as other:
        listener.execute(f"LISTEN {CHANNEL}")
        ids = {"key": client.key.pk, "user": client.user.pk}
        other.execute("UPDATE accounts_apikey SET last_used_at = now() WHERE id = %(key)s", ids)
        other.execute("UPDATE accounts_user SET last_login = now() WHERE id = %(user)s", ids)
        other.execute("UPDATE accounts_apikey SET scopes = scopes WHERE id = %(key)s", ids)
        assert list(listener.notifies(timeout=0.5)) == []
        other.execute("UPDATE accounts_apikey SET name = 'renamed' WHERE id = %(key)s", ids)
        other.execute("UPDATE accounts_user SET email = 'a@example.org' WHERE id = %(user)s", ids)
        heard = list(listener.notifies(timeout=1.0, stop_after=2))
        assert [notice.channel for notice in heard] == [CHANNEL, CHANNEL]


def test_the_cache_is_not_used_while_its_listener_is_down(cache, client_of):
    client = client_of()
    assert client.get(BALANCE).status_code == 200
    assert key_reads(client) == 0
    with other_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [cache.listener_backend_pid])
    assert eventually(lambda: not cache.listening, timeout_s=2.0)
    # Down: every request reads its key (a change made now cannot be missed).
    with other_connection() as other:
        other.execute(
            "UPDATE accounts_apikey SET revoked_at = now() WHERE id = %s", [client.key.pk]
        )
    if not cache.listening:  # it reconnects after half a second; a fresh cache is as good
        assert client.get(BALANCE).status_code == 401
    assert eventually(lambda: cache.listening), "the listener did not reconnect"
    assert client.get(BALANCE).status_code == 401


def test_a_listener_that_stops_answering_stops_the_cache(cache_behind_proxy, client_of):
    """A connection dropped without a word (a firewall, a partition) raises nothing, and the
    revocations sent to it never arrive: the cache is trusted only for ALIVE_FOR_S after the
    listener's last answered heartbeat."""
    cache, proxy = cache_behind_proxy
    client = client_of()
    assert client.get(BALANCE).status_code == 200
    time.sleep(2 * keycache.ALIVE_FOR_S)  # heartbeats keep a healthy listener trusted
    assert key_reads(client) == 0
    proxy.blackhole()
    # (a request every half second: the API's rate limit applies here too)
    assert eventually(
        lambda: key_reads(client) > 0, timeout_s=4 * keycache.ALIVE_FOR_S, every_s=0.5
    )
    assert cache.listening  # its connection never failed: the missing answers stopped it
    with other_connection() as other:  # a revocation the listener cannot hear
        other.execute(
            "UPDATE accounts_apikey SET revoked_at = now() WHERE id = %s", [client.key.pk]
        )
    assert client.get(BALANCE).status_code == 401


def test_a_lookup_that_raced_a_notification_is_not_kept(cache, client_of):
    client = client_of()
    key = ApiKey.objects.get(pk=client.key.pk)
    ticket = cache.ticket()
    cache.invalidate()  # a notification arrived while the lookup read the database
    cache.store(key.key_hash, ("stale",), ticket=ticket)
    assert cache.get(key.key_hash) is None
    cache.store(key.key_hash, ("fresh",), ticket=cache.ticket())
    assert cache.get(key.key_hash) == ("fresh",)


def test_off_means_every_request_reads_its_key(settings, client_of):
    settings.API_KEY_CACHE = False
    client = client_of()
    assert key_reads(client) == 2  # read, and its first use recorded
    assert key_reads(client) == 1
    assert key_reads(client) == 1


def test_a_forked_process_starts_with_nothing_and_no_listener(cache, client_of):
    """As granian's workers are forked: the child neither trusts the parent's entries nor
    counts on its listener thread, which a fork does not copy."""
    client = client_of()
    assert client.get(BALANCE).status_code == 200
    assert cache._entries  # the parent has the key
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        fresh = not cache.listening and not cache._entries and cache._pid is None
        os.write(write_end, b"1" if fresh else b"0")
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read_end, 1) == b"1"
    assert cache.listening and cache._entries  # the parent is untouched
