"""What the benchmark scripts' smoke runs share."""

import pytest
from django.db import connection


@pytest.fixture
def pg_server(db) -> tuple[str, str]:
    """(the test database server's URL without a database, the test database's name): the
    scripts make their own databases beside it."""
    settings = connection.settings_dict
    auth = settings["USER"] + (f":{settings['PASSWORD']}" if settings["PASSWORD"] else "")
    host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    return f"postgres://{auth}@{host}:{port}", settings["NAME"]
