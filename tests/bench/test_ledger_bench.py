"""Smoke run of bench/ledger_bench.py --quick (no figures are asserted: timing belongs to the
benchmark, not to the tests). It only proves the script still runs against the current code:
its own database, worker processes, the history build through the triggers, the reads."""

import pytest


@pytest.mark.postgres_only
@pytest.mark.slow
def test_quick_benchmark_runs(run_bench_script):
    done = run_bench_script(
        "bench/ledger_bench.py", "--quick", "--skip-pgbench", database="bench", env_database=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ledger_check after the runs: OK" in done.stdout
    assert "statement deep page" in done.stdout
