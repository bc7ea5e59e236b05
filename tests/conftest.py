import itertools

import pytest
from django.db import connection

_usernames = itertools.count()


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests (row locks, triggers that SQLite lacks, real concurrency) skip
    on SQLite, so the same suite is the embedded default's smoke run."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_user(db):
    from accounts.models import User

    def make(username: str | None = None, **extra):
        name = username or f"user{next(_usernames)}"
        return User.objects.create_user(username=name, password="pw-" + name, **extra)

    return make


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"
