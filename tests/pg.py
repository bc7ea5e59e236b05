"""Helpers for tests that must see the database as another session does."""

from __future__ import annotations

import psycopg

from accounts.keycache import _listener_params


def other_connection() -> psycopg.Connection:
    """Another session (autocommit), as another web process or an operator's psql would be:
    it sees only what has been committed."""
    return psycopg.connect(**_listener_params(), autocommit=True)
