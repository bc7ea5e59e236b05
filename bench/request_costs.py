"""What the pieces of an API request cost on this machine, in CPU and wall time.

Prints, each averaged over many repetitions:
- one PostgreSQL round trip (`SELECT 1`) through psycopg: wall time and the client's CPU, over
  TCP and a Unix socket, from 1 and 8 threads of one process (gunicorn's gthread shape);
- the same query built through Django's ORM, through `Model.objects.raw`, and hand-written
  through a cursor (config/sqlrows.py): the API key lookup and the receiving-node list;
- decoding and signing a BOLT 11 invoice; rendering a response through a DRF serializer.

These explain the API benchmark's figures (bench/RESULTS.md, "API vs LNbits"). Run from the
repository root with the project's environment; it creates (and drops first) the database
`satledger_bench_costs`:

    .venv/bin/python bench/request_costs.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DB = "satledger_bench_costs"
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB}"
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
sys.path.insert(0, str(REPO))


def measure(function, repeat: int) -> tuple[float, float]:
    """(wall µs, CPU µs of this process) per call, best of three runs."""
    function()
    runs = []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeat):
            function()
        runs.append(
            (
                (time.perf_counter() - wall) / repeat * 1e6,
                (time.process_time() - cpu) / repeat * 1e6,
            )
        )
    return min(runs)


def threaded_round_trips(dsn: str, threads: int, per_thread: int = 2000) -> tuple[float, float]:
    import psycopg

    connections = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]

    def work(connection) -> None:
        for _ in range(per_thread):
            connection.execute("SELECT 1").fetchall()

    workers = [threading.Thread(target=work, args=(c,)) for c in connections]
    wall, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    result = (
        total / (time.perf_counter() - wall),
        (time.process_time() - cpu) / total * 1e6,
    )
    for connection in connections:
        connection.close()
    return result


def row(label: str, wall_us: float, cpu_us: float) -> None:
    print(f"| {label} | {wall_us:,.0f} | {cpu_us:,.0f} |")


def main() -> None:
    subprocess.run(
        ["psql", "-qh", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {DB}"],
        check=True,
    )
    subprocess.run(
        ["psql", "-qh", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {DB}"], check=True
    )
    print("PostgreSQL round trips (psycopg, SELECT 1)\n")
    print("| transport | threads | round trips/s | client CPU µs per round trip |")
    print("|---|---:|---:|---:|")
    for transport, dsn in (
        ("TCP 127.0.0.1", f"host=127.0.0.1 user=postgres dbname={DB}"),
        ("Unix socket", f"host=/var/run/postgresql user=postgres dbname={DB}"),
    ):
        for threads in (1, 8):
            rate, cpu = threaded_round_trips(dsn, threads)
            print(f"| {transport} | {threads} | {rate:,.0f} | {cpu:,.0f} |")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    call_command("ensure_default_node", verbosity=0)

    from accounts.models import ApiKey, User
    from accounts.selectors import api_key_for_plaintext
    from accounts.services import api_key_issue
    from lightning.api import DepositSerializer
    from lightning.backends.base import Network
    from lightning.invoices import decode_bolt11
    from lightning.models import Node
    from lightning.nodes import receiving_nodes
    from lightning.services import deposit_create

    user = User.objects.create_user(username="costs", password="costs-password-1")
    key, plaintext = api_key_issue(user=user, name="costs", scopes=["read"])
    invoice = deposit_create(user=user, amount_msat=100_000)

    def orm_key():
        return ApiKey.objects.select_related("user").filter(key_hash=key.key_hash).first()

    def raw_key():
        return list(
            ApiKey.objects.raw("SELECT * FROM accounts_apikey WHERE key_hash = %s", [key.key_hash])
        )

    def cursor_select_1():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    print("\nOne statement through Django (PostgreSQL, this process, one thread)\n")
    print("| what | wall µs | CPU µs |")
    print("|---|---:|---:|")
    row("`SELECT 1` through a Django cursor", *measure(cursor_select_1, 2000))
    row("API key + user: ORM `select_related(...).first()`", *measure(orm_key, 2000))
    row("API key: `ApiKey.objects.raw(...)`", *measure(raw_key, 2000))
    row(
        "API key + user: hand-written (`api_key_for_plaintext`)",
        *measure(lambda: api_key_for_plaintext(plaintext), 2000),
    )
    row(
        "node list: ORM `list(Node.objects.filter(...))`",
        *measure(lambda: list(Node.objects.filter(enabled=True, can_receive=True)), 2000),
    )
    row(
        "node list: hand-written (`receiving_nodes`)",
        *measure(lambda: receiving_nodes(amount_msat=None), 2000),
    )

    print("\nCPU-only steps\n")
    print("| what | wall µs | CPU µs |")
    print("|---|---:|---:|")
    row(
        "decode a BOLT 11 invoice (`decode_bolt11`)",
        *measure(lambda: decode_bolt11(invoice.bolt11, network=Network.REGTEST), 2000),
    )
    row(
        "a deposit response through `DepositSerializer`",
        *measure(lambda: DepositSerializer(invoice).data, 2000),
    )
    print(
        f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs; median load1 now "
        f"{statistics.median(os.getloadavg()):.1f}"
    )


if __name__ == "__main__":
    main()
