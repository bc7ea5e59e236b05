"""A per-process cache of API keys that never outlives a revocation.

Every API request authenticates by its key; read from the database, that is a round trip and
two model instances (7 % of an internal payment's Python instructions, 3 % of PostgreSQL's:
bench/RESULTS.md, "Session 6"). Here a key found
once is kept in the process, keyed by its SHA-256 (the plaintext is never kept), under rules
that make a revocation reach every process as soon as PostgreSQL can tell it:

- database triggers (accounts/migrations/0004) `NOTIFY satledger_api_keys` whenever
  something authentication reads changes: a key's row (anything but `last_used_at`), a
  user's row (anything but `last_login`), a key or user deleted, either table truncated;
- each process listens on a connection of its own and empties its cache on every
  notification;
- the cache is used only while that listener is connected and listening: before it is, and
  from the moment its connection fails until it has listened again (and emptied the cache),
  every request reads the database;
- the listener proves its connection with a round trip every HEARTBEAT_S, and the cache is
  trusted only for ALIVE_FOR_S after the last proof was sent: a connection that stops
  answering without failing (dropped by a firewall or a partition, where nothing tells the
  client) stops the cache within ALIVE_FOR_S; TCP keepalives and a user timeout then make it
  fail, and the listener reconnects;
- a lookup stores its row only if no notification arrived since before it read the database
  (the epoch), so a read that raced a revocation is not kept.

A revoked key is therefore refused by the process that revoked it at once, and by the others
once the notification is delivered (PostgreSQL sends it at commit: milliseconds), or, where the
listener's connection silently stopped answering, ALIVE_FOR_S at most after its last proof.
Unknown keys are never cached (no memory for an attacker's guesses). PostgreSQL only
(`API_KEY_CACHE`, on by default): SQLite has no notifications, so there every request reads
the key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

CHANNEL = "satledger_api_keys"
LISTENER_APPLICATION_NAME = "satledger api key cache"
MAX_ENTRIES = 10_000  # keys in use at once per process; beyond it the oldest go
RECONNECT_DELAY_S = (0.5, 30.0)  # first and longest wait before the listener reconnects
NOTIFY_WAIT_S = 1.0  # how often the listener looks up from its wait (to stop, to prove)
HEARTBEAT_S = 5.0  # how often the listener proves its connection with a round trip
ALIVE_FOR_S = 12.0  # how long after a proof was sent the cache is still trusted
# The listener's connection, over TCP (libpq ignores these on a Unix socket): keepalive probes
# while it waits, so that a dropped connection fails instead of waiting forever, and a limit
# on unacknowledged data, so that a heartbeat sent into a dead connection fails too.
LISTENER_TCP_PARAMS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,  # ms
}

Row = tuple[Any, ...]


class ApiKeyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Row] = {}
        self._epoch = 0
        self._listening = False
        self._alive_until = 0.0  # monotonic: the listener's last proof + ALIVE_FOR_S
        self._pid: int | None = None  # the process whose listener runs (reset after a fork)
        self._stop = threading.Event()
        self._listener_connection: psycopg.Connection | None = None  # read by tests

    # --- lookups (request threads) ---------------------------------------------------------

    def enabled(self) -> bool:
        return settings.API_KEY_CACHE and connections[DEFAULT_DB_ALIAS].vendor == "postgresql"

    def get(self, digest: str) -> Row | None:
        """The cached row of this key, or None (not cached, or the cache is not usable)."""
        if not self.enabled():
            return None
        self._start_listener_once()
        if not self._trusted():
            return None
        return self._entries.get(digest)

    def ticket(self) -> int | None:
        """Taken before reading a key from the database; `store` needs it unchanged."""
        if not self.enabled() or not self._trusted():
            return None
        return self._epoch

    def store(self, digest: str, row: Row, *, ticket: int | None) -> None:
        with self._lock:
            if ticket is None or not self._trusted() or ticket != self._epoch:
                return  # a notification (or a disconnect) came since the read began
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[digest] = row

    def replace(self, digest: str, *, position: int, value: Any) -> None:
        """Change one column of a cached row (the key's last-used time after a touch)."""
        with self._lock:
            row = self._entries.get(digest)
            if row is not None:
                self._entries[digest] = (*row[:position], value, *row[position + 1 :])

    def _trusted(self) -> bool:
        """Listening, and its connection proved recently enough."""
        return self._listening and time.monotonic() < self._alive_until

    def invalidate(self) -> None:
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        """Empty the cache; a lookup that began before cannot store its row (the caller holds
        the lock)."""
        self._epoch += 1
        self._entries.clear()

    # --- the listener ------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A fork copies the parent's entries and lock but not its listener thread: start
        over, unlistened (the next lookup starts this process's own listener)."""
        self._lock = threading.Lock()  # the parent's may have been held by its listener
        self._pid, self._listening, self._alive_until = None, False, 0.0
        self._forget()
        self._listener_connection = None

    def _start_listener_once(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._pid, self._listening = pid, False
            self._forget()
            self._stop = threading.Event()  # the previous listener keeps its own, set
            threading.Thread(
                target=self._listen_forever, args=(self._stop,), name="api-key-cache", daemon=True
            ).start()

    def _listen_forever(self, stop: threading.Event) -> None:
        delay = RECONNECT_DELAY_S[0]
        while not stop.is_set():
            try:
                with psycopg.connect(**_listener_params(), autocommit=True) as connection:
                    if stop is self._stop:
                        self._listener_connection = connection
                    sent = time.monotonic()
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._set_listening(stop, True)  # from here on every change is heard
                    self._proved(stop, sent=sent)
                    delay = RECONNECT_DELAY_S[0]
                    while not stop.is_set():  # a lost connection raises here
                        for _ in connection.notifies(timeout=NOTIFY_WAIT_S):
                            self.invalidate()
                        if time.monotonic() - sent >= HEARTBEAT_S:
                            sent = time.monotonic()
                            connection.execute("SELECT 1")
                            # What arrived with the answer is heard before the proof counts.
                            for _ in connection.notifies(timeout=0):
                                self.invalidate()
                            self._proved(stop, sent=sent)
            except Exception as error:  # any failure: keys are read from the database
                if not stop.is_set():
                    # The class only: a connection error's text can carry connection details.
                    logger.warning(
                        "API key cache off until its listener reconnects (%s)",
                        type(error).__name__,
                    )
            finally:
                self._set_listening(stop, False)
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_DELAY_S[1])

    def _set_listening(self, stop: threading.Event, listening: bool) -> None:
        """Either way the cache starts empty. Only the current listener may change it (one
        that was stopped may still be winding down)."""
        with self._lock:
            if stop is not self._stop or (listening and stop.is_set()):
                return
            self._forget()
            self._listening, self._alive_until = listening, 0.0  # trusted once proved
            if not listening:
                self._listener_connection = None

    def _proved(self, stop: threading.Event, *, sent: float) -> None:
        """The listener's connection answered a round trip sent at `sent`: every change
        committed before then has been heard. Entries kept across a lapse are dropped."""
        with self._lock:
            if stop is not self._stop:
                return
            if time.monotonic() >= self._alive_until:
                self._forget()
            self._alive_until = sent + ALIVE_FOR_S

    def stop(self) -> None:
        """Stop the listener (within NOTIFY_WAIT_S) and forget everything (tests)."""
        self._stop.set()
        with self._lock:
            self._pid, self._listening, self._alive_until = None, False, 0.0
            self._forget()

    @property
    def listening(self) -> bool:
        return self._listening

    @property
    def listener_backend_pid(self) -> int | None:
        connection = self._listener_connection
        return connection.info.backend_pid if connection is not None else None


def _listener_params() -> dict[str, Any]:
    """How Django connects, minus what belongs to its own connections (pool, cursor class,
    adapters, prepared statements)."""
    params = connections[DEFAULT_DB_ALIAS].get_connection_params()
    for key in ("context", "cursor_factory", "prepare_threshold"):
        params.pop(key, None)
    params["application_name"] = LISTENER_APPLICATION_NAME  # tells it apart in pg_stat_activity
    params.update(LISTENER_TCP_PARAMS)
    return params


api_key_cache = ApiKeyCache()
os.register_at_fork(after_in_child=api_key_cache._after_fork_in_child)
