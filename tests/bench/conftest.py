"""What the benchmark scripts' smoke runs share: running a script from the repository root
beside the test database, and dropping the databases it made, whatever happens."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_bench_script(db) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """run(script args..., database=name, env_database=bool): runs `python <args>` with
    `{server}` in the arguments replaced by the test server's URL (no database) and, with
    `env_database`, DATABASE_URL set to the database `name`; every database whose name starts
    with `name` is dropped afterwards."""
    settings = connection.settings_dict
    auth = settings["USER"] + (f":{settings['PASSWORD']}" if settings["PASSWORD"] else "")
    host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    server = f"postgres://{auth}@{host}:{port}"
    made: list[str] = []

    def run(*args: str, database: str, env_database: bool = False):
        name = f"{settings['NAME']}_{database}"
        made.append(name)
        env = {**os.environ, **({"DATABASE_URL": f"{server}/{name}"} if env_database else {})}
        arguments = [arg.format(server=server, database=name) for arg in args]
        return subprocess.run(
            [sys.executable, *arguments],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    yield run
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        for prefix in made:
            names = admin.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix]
            ).fetchall()
            for (name,) in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
