"""Smoke run of bench/payment_cost.py with a few payments (no figures are asserted: timing
belongs to the benchmark). It proves the script still runs against the current code: the
template database, the clone, internal payments through the WSGI handler, the CPU readings."""

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres_only
@pytest.mark.slow
def test_payment_cost_runs(pg_server):
    server, test_database = pg_server
    name = f"{test_database}_payment_cost"
    command = [sys.executable, "bench/payment_cost.py", "--payments", "5"]
    try:
        done = subprocess.run(
            [*command, "--server", server, "--database", name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            for database in (name, f"{name}_tpl"):
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^5 internal payments .* PostgreSQL backend [\d,]+ µs$", done.stdout, re.M)
