"""Smoke run of bench/payment_cost.py with a few payments (no figures are asserted: timing
belongs to the benchmark). It proves the script still runs against the current code: the
template database, the clone, internal payments through config.wsgi, the CPU readings."""

import glob
import re
import shutil

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


@pytest.mark.postgres_only
@pytest.mark.slow
@pytest.mark.skipif(
    not shutil.which("valgrind") or not glob.glob("/usr/lib/postgresql/*/bin/postgres"),
    reason="needs valgrind and PostgreSQL's server binaries",
)
def test_payment_cost_counts_postgres_instructions(run_bench_script, tmp_path):
    """--pg-callgrind: a private server under callgrind, two runs, one count per payment;
    --keep leaves both backends' profiles for callgrind_annotate."""
    done = run_bench_script(
        "bench/payment_cost.py",
        *("--payments", "3", "--pg-callgrind", "--keep", str(tmp_path / "kept")),
        database="payment_cost_pg",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(
        r"^callgrind: ([\d,]+) instructions per payment \(PostgreSQL", done.stdout, re.M
    )
    assert found and int(found.group(1).replace(",", "")) > 0, done.stdout
    kept = sorted(path.name for path in (tmp_path / "kept").iterdir())
    assert kept == ["callgrind.pg.3", "callgrind.pg.9"]
