"""Smoke run of bench/ledger_bench.py --quick (no figures are asserted: timing belongs to the
benchmark, not to the tests). It only proves the script still runs against the current code:
its own database, worker processes, the history build through the triggers, the reads."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres_only
@pytest.mark.slow
def test_quick_benchmark_runs(pg_server):
    server, test_database = pg_server
    name = f"{test_database}_bench"
    env = {**os.environ, "DATABASE_URL": f"{server}/{name}"}
    try:
        done = subprocess.run(
            [sys.executable, "bench/ledger_bench.py", "--quick", "--skip-pgbench"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ledger_check after the runs: OK" in done.stdout
    assert "statement deep page" in done.stdout
