"""Smoke run of bench/payment_cost.py with a few payments (no figures are asserted: timing
belongs to the benchmark). It proves the script still runs against the current code: the
template database, the clone, internal payments through config.wsgi, the CPU readings."""

import re

import pytest


@pytest.mark.postgres_only
@pytest.mark.slow
def test_payment_cost_runs(run_bench_script):
    done = run_bench_script(
        "bench/payment_cost.py",
        *("--payments", "5", "--server", "{server}", "--database", "{database}"),
        database="payment_cost",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^5 internal payments .* PostgreSQL backend [\d,]+ µs$", done.stdout, re.M)
