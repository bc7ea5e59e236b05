import itertools

import pytest
from django.core.management import call_command
from django.db import connection

from ledger import db_guards

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


@pytest.fixture
def committed_db(transactional_db):
    """transactional_db whose teardown also works on SQLite after journals were posted: the
    flush between transactional tests DELETEs every row, which the ledger's append-only
    triggers refuse on SQLite (PostgreSQL's flush TRUNCATEs). So drop the guards, flush,
    and put them back."""
    yield
    if connection.vendor != "sqlite":
        return
    with connection.schema_editor() as editor:
        db_guards.uninstall(editor)
    try:
        call_command("flush", interactive=False, verbosity=0)
    finally:
        with connection.schema_editor() as editor:
            db_guards.install(editor)
