#!/usr/bin/env python
"""Ledger benchmark on PostgreSQL: pgbench TPC-B as the yardstick, then the ledger's own
services from concurrent worker processes, then balance and statement reads at 1k and ~1M
postings. Prints every figure; bench/RESULTS.md records a run.

    .venv/bin/python bench/ledger_bench.py            # full run (several minutes)
    .venv/bin/python bench/ledger_bench.py --quick    # smoke run (seconds)

DATABASE_URL names the database the benchmark (re)creates and migrates; default
postgres://postgres@127.0.0.1:5432/satledger_bench (the role needs CREATEDB). pgbench gets
its own database next to it (pgbench_bench). Both are dropped and rebuilt on every run.
Nothing here changes the server's configuration; the history build sets
synchronous_commit=off for its own session only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/satledger_bench"
FUNDING_MSAT = 10**12  # per user: never runs out during a run
TRANSFER_MSAT = 1_000


@dataclass(frozen=True)
class Config:
    quick: bool
    users: int
    duration: float
    deposit_workers: tuple[int, ...]
    transfer_workers: int
    pgbench_scale: int
    pgbench_clients: int
    pgbench_seconds: int
    history_sizes: tuple[int, ...]
    read_samples: int


FULL = Config(
    quick=False,
    users=10_000,
    duration=15.0,
    deposit_workers=(1, 2, 4, 8, 16),
    transfer_workers=16,
    pgbench_scale=16,
    pgbench_clients=16,
    pgbench_seconds=30,
    history_sizes=(1_000, 1_000_000),
    read_samples=300,
)
QUICK = Config(
    quick=True,
    users=200,
    duration=1.0,
    deposit_workers=(1, 4),
    transfer_workers=4,
    pgbench_scale=1,
    pgbench_clients=4,
    pgbench_seconds=2,
    history_sizes=(200, 2_000),
    read_samples=20,
)


# --- setup ---------------------------------------------------------------------------------


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnopqrstuv")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _server_dsn(url: str, dbname: str) -> str:
    parsed = urlparse(url)
    return parsed._replace(path=f"/{dbname}").geturl()


def recreate_database(url: str, dbname: str) -> None:
    import psycopg

    with psycopg.connect(_server_dsn(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def log(message: str) -> None:
    print(message, flush=True)


def machine_report() -> None:
    from django.db import connection

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    log("## Machine")
    log(f"- nproc: {os.cpu_count()}, RAM: {mem_gb:.1f} GiB, {platform.platform()}")
    log(f"- Python {platform.python_version()}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        log(f"- {cursor.fetchone()[0]}")
        settings = []
        for name in (
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "commit_delay",
            "shared_buffers",
            "max_connections",
            "default_transaction_isolation",
            "shared_preload_libraries",
        ):
            cursor.execute(f"SHOW {name}")
            settings.append(f"{name}={cursor.fetchone()[0]}")
        log(f"- {', '.join(settings)}")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        log(f"- client connections at start (all databases): {cursor.fetchone()[0]}")


# --- pgbench -------------------------------------------------------------------------------


def _pgbench(
    url: str, dbname: str, args: list[str], *, init: bool = False
) -> tuple[float, str, list[str]]:
    """Run pgbench against `dbname`; returns (tps, average latency in ms, the command)."""
    binary = shutil.which("pgbench") or "/usr/bin/pgbench"
    parsed = urlparse(url)
    common = ["-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 5432)]
    common += ["-U", parsed.username or "postgres"]
    env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    command = [binary, *args, *common, dbname]
    out = subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout
    if init:
        return 0.0, "", command
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not match:
        raise RuntimeError(f"could not parse pgbench output:\n{out}")
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    return float(match.group(1)), latency.group(1) if latency else "?", command


def run_pgbench(url: str, cfg: Config) -> float:
    dbname = "pgbench_bench_quick" if cfg.quick else "pgbench_bench"
    recreate_database(url, dbname)
    _pgbench(url, dbname, ["-i", "-q", "-s", str(cfg.pgbench_scale)], init=True)
    log("## pgbench TPC-B")
    log(f"- initialised with: pgbench -i -s {cfg.pgbench_scale} {dbname}")
    results = {}
    for clients in sorted({1, cfg.pgbench_clients}):
        jobs = min(clients, os.cpu_count() or 1)
        tps, latency, command = _pgbench(
            url, dbname, ["-c", str(clients), "-j", str(jobs), "-T", str(cfg.pgbench_seconds)]
        )
        results[clients] = tps
        log(f"- `{' '.join(command)}`: {tps:.0f} tps, latency average {latency} ms")
    tps = results[cfg.pgbench_clients]
    if len(results) > 1:
        log(
            f"- pgbench scaling 1 -> {cfg.pgbench_clients} clients on this machine: "
            f"x{tps / results[1]:.2f}"
        )
    return tps


def _ledger_statement_script(mode: str) -> str:
    """A pgbench script running the ledger service's own PostgreSQL statement
    (ledger.services._POSTGRES_POST) with pgbench's C client instead of Python/Django: the
    database side of a deposit or a transfer, triggers and deferred checks included."""
    from ledger.services import _POSTGRES_POST

    if mode == "deposit":
        head = "\\set u random(:lo, :hi)\n"
        locked, accounts = "ARRAY[:u]", "ARRAY[:node, :u]"
    else:
        head = (
            "\\set a random(:lo, :hi)\n"
            "\\set b :lo + ((:a - :lo + random(1, :hi - :lo)) % (:hi - :lo + 1))\n"
        )
        locked, accounts = "ARRAY[least(:a, :b), greatest(:a, :b)]", "ARRAY[:a, :b]"
    values = [
        "'pgbench:' || gen_random_uuid()",
        f"'{mode}'",
        "''",
        "''",
        "''",
        "NULL",
        "NULL",
        "now()",
        locked,
        accounts,
        f"ARRAY[{TRANSFER_MSAT}, -{TRANSFER_MSAT}]",
    ]
    sql = _POSTGRES_POST
    for value in values:
        sql = sql.replace("%s", value, 1)
    return head + sql.strip() + ";\n"


def ledger_statement_pgbench(
    url: str, cfg: Config, account_ids: list[int], node_id: int
) -> dict[str, float]:
    """The ledger's statement driven by pgbench: what the database sustains without the
    Python client (on this machine the clients share the two cores with the server)."""
    import tempfile

    dbname = urlparse(url).path.lstrip("/")
    rates: dict[str, float] = {}
    seconds = max(2, int(cfg.duration))
    log(f"\n## The ledger's own statement driven by pgbench (C client, {seconds} s each)")
    for mode in ("transfer", "deposit"):
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write(_ledger_statement_script(mode))
        try:
            for clients in sorted({1, cfg.pgbench_clients}):
                tps, latency, _ = _pgbench(
                    url,
                    dbname,
                    [
                        "-n",
                        "-f",
                        script.name,
                        "-c",
                        str(clients),
                        "-j",
                        str(min(clients, os.cpu_count() or 1)),
                        "-T",
                        str(seconds),
                        "-D",
                        f"lo={min(account_ids)}",
                        "-D",
                        f"hi={max(account_ids)}",
                        "-D",
                        f"node={node_id}",
                    ],
                )
                rates[f"{mode}_{clients}"] = tps
                log(f"- {mode}, {clients:>2} clients: {tps:.0f}/s (latency {latency} ms)")
        finally:
            os.unlink(script.name)
    return rates


# --- ledger data ---------------------------------------------------------------------------


def seed_users(count: int, prefix: str) -> list[int]:
    """`count` users with ledger accounts, each funded by one deposit from the node (bulk SQL
    through the normal triggers). Returns their account ids."""
    from django.db import connection, transaction

    from accounts.models import User
    from ledger import services
    from ledger.models import Account, AccountKind

    node = services.node_asset_account_get_or_create(node_name="bench")
    with transaction.atomic():
        users = User.objects.bulk_create(
            [User(username=f"{prefix}{index}", password="!") for index in range(count)],
            batch_size=2_000,
        )
        accounts = Account.objects.bulk_create(
            [
                Account(
                    code=services.user_account_code(user),
                    name=f"Balance of {user.username}",
                    kind=AccountKind.LIABILITY,
                    owner=user,
                    allow_negative=False,
                    cached=True,
                )
                for user in users
            ],
            batch_size=2_000,
        )
        ids = [account.pk for account in accounts]
        assert ids == list(range(ids[0], ids[0] + count)), "pgbench scripts need contiguous ids"
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH j AS (INSERT INTO ledger_journal (idempotency_key, kind, memo, "
                "reference_type, reference_id, created_at) "
                "SELECT 'bench-fund:' || a, 'deposit', 'benchmark funding', 'bench', a::text, "
                "now() FROM unnest(%s::bigint[]) AS a RETURNING id, reference_id) "
                "INSERT INTO ledger_posting (journal_id, account_id, amount_msat) "
                "SELECT id, reference_id::bigint, %s FROM j "
                "UNION ALL SELECT id, %s, %s FROM j",
                [ids, -FUNDING_MSAT, node.pk, FUNDING_MSAT],
            )
    return ids


def build_history(account_id: int, node_id: int, postings: int, tag: str) -> float:
    """Give one user account `postings` postings: journals alternating a deposit of 2000 msat
    from the node and a payment of 1000 msat back to it, written by INSERT ... SELECT
    generate_series in batches, every trigger on (running balances filled and checked by
    the posting trigger, zero-sum checked at each commit). Returns the seconds it took."""
    from django.db import connection, transaction

    batch = 2_000  # postings on the user per transaction: same-row updates stay cheap
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")  # this session only
    for low in range(1, postings + 1, batch):
        high = min(low + batch - 1, postings)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "WITH j AS (INSERT INTO ledger_journal (idempotency_key, kind, memo, "
                "reference_type, reference_id, created_at) "
                "SELECT %s || s.g, CASE WHEN s.g %% 2 = 1 THEN 'deposit' ELSE 'payment' END, "
                "'benchmark history', 'bench', s.g::text, now() "
                "FROM generate_series(%s::bigint, %s::bigint) AS s(g) ORDER BY s.g "
                "RETURNING id, reference_id) "
                "INSERT INTO ledger_posting (journal_id, account_id, amount_msat) "
                "SELECT id, acct, amount FROM (SELECT j.id, v.acct, "
                "CASE WHEN j.reference_id::bigint %% 2 = 1 THEN v.dir * 2000 "
                "ELSE -v.dir * 1000 END AS amount, v.ord FROM j CROSS JOIN (VALUES "
                "(%s::bigint, -1, 0), (%s::bigint, 1, 1)) AS v(acct, dir, ord)) x "
                "ORDER BY id, ord",
                [f"bench-{tag}:", low, high, account_id, node_id],
            )
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = DEFAULT")
    return time.perf_counter() - started


# --- concurrent workers --------------------------------------------------------------------


def _worker(
    url: str,
    mode: str,
    index: int,
    workers: int,
    account_ids: list[int],
    node_id: int,
    duration: float,
    run: str,
    barrier,
    results,
) -> None:
    django_setup(url)
    from django.db import connection

    from ledger import services
    from ledger.errors import InsufficientBalance
    from ledger.models import Account

    accounts = [Account(pk=pk, kind="liability", cached=True) for pk in account_ids]
    node = Account(pk=node_id, kind="asset", cached=False)
    rng = random.Random(f"{run}:{index}")
    mine = accounts[index::workers] or accounts
    step = 0

    def one() -> None:
        nonlocal step
        step += 1
        key = f"bench:{run}:{index}:{step}"
        if mode == "transfer":
            debit, credit = rng.sample(accounts, 2)
            services.transfer(
                idempotency_key=key,
                kind="transfer",
                debit=debit,
                credit=credit,
                amount_msat=TRANSFER_MSAT,
            )
        elif mode == "deposit":
            services.transfer(
                idempotency_key=key,
                kind="deposit",
                debit=node,
                credit=mine[step % len(mine)],
                amount_msat=TRANSFER_MSAT,
            )
        elif mode == "deposit-one-user":
            services.transfer(
                idempotency_key=key,
                kind="deposit",
                debit=node,
                credit=accounts[0],
                amount_msat=TRANSFER_MSAT,
            )
        else:
            raise ValueError(mode)

    one()  # connect and warm up before the clock starts
    latencies: list[float] = []
    refused = 0
    barrier.wait()
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + duration
    while True:
        before = time.perf_counter()
        if before >= deadline:
            break
        try:
            one()
        except InsufficientBalance:
            refused += 1
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    results.put((index, len(latencies), refused, elapsed, latencies, cpu))
    connection.close()


class WaitSampler:
    """Samples pg_stat_activity of the benchmark database every 10 ms from its own
    connection: what the backends are doing (running, waiting on a lock, waiting for
    the client) while the workers run."""

    def __init__(self, url: str) -> None:
        import threading
        from collections import Counter

        self.url = url
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        dbname = urlparse(self.url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'",
                    [dbname],
                ).fetchall()
                for state, wait_type, wait_event in rows:
                    if state == "idle":
                        label = "idle (between transactions, client side)"
                    elif state == "idle in transaction":
                        label = "idle in transaction (waiting for its client)"
                    elif wait_type == "Lock":
                        label = f"waiting on a lock ({wait_event})"
                    elif wait_type is None:
                        label = "running on CPU"
                    else:
                        label = f"{wait_type}:{wait_event}"
                    self.counts[label] += 1
                time.sleep(0.01)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> str:
        total = sum(self.counts.values()) or 1
        return "; ".join(
            f"{label} {100 * count / total:.0f}%" for label, count in self.counts.most_common(6)
        )

    def lock_share(self) -> float:
        total = sum(self.counts.values()) or 1
        locked = sum(c for label, c in self.counts.items() if label.startswith("waiting on a"))
        return locked / total


@dataclass
class Throughput:
    workers: int
    per_second: float
    p50_ms: float
    p99_ms: float
    refused: int
    client_cpu_us: float  # CPU time of the worker processes per operation


def run_workers(
    url: str, mode: str, workers: int, account_ids: list[int], node_id: int, duration: float
) -> Throughput:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    run = f"{mode}-{workers}-{time.time_ns()}"
    processes = [
        ctx.Process(
            target=_worker,
            args=(url, mode, i, workers, account_ids, node_id, duration, run, barrier, results),
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    collected = [results.get(timeout=duration + 300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"worker exited with {process.exitcode}")
    done = sum(item[1] for item in collected)
    elapsed = max(item[3] for item in collected)
    latencies = sorted(latency for item in collected for latency in item[4])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0
    return Throughput(
        workers=workers,
        per_second=done / elapsed,
        p50_ms=1000 * statistics.median(latencies) if latencies else 0,
        p99_ms=1000 * p99,
        refused=sum(item[2] for item in collected),
        client_cpu_us=1e6 * sum(item[5] for item in collected) / max(done, 1),
    )


def _describe(label: str, result: Throughput, sampler: WaitSampler | None = None) -> None:
    log(
        f"- {label}, {result.workers:>2} workers: {result.per_second:.0f}/s "
        f"(p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"client CPU {result.client_cpu_us:.0f} us/op, refused {result.refused})"
    )
    if sampler is not None:
        log(f"  - backends sampled: {sampler.summary()}")


def throughput_section(url: str, cfg: Config, pgbench_tps: float) -> dict[str, float]:
    from ledger import services
    from ledger.checks import run_checks

    log(f"\n## Ledger services from concurrent worker processes ({cfg.duration:.0f} s each)")
    started = time.perf_counter()
    account_ids = seed_users(cfg.users, prefix="bench")
    node_id = services.node_asset_account_get_or_create(node_name="bench").pk
    log(f"- seeded {cfg.users} funded users in {time.perf_counter() - started:.1f} s")

    def measure(mode: str, workers: int, label: str) -> Throughput:
        with WaitSampler(url) as sampler:
            result = run_workers(url, mode, workers, account_ids, node_id, cfg.duration)
        _describe(label, result, sampler if workers > 1 else None)
        return result

    figures: dict[str, float] = {}
    transfer = measure("transfer", cfg.transfer_workers, "transfer between random users")
    figures["transfer"] = transfer.per_second
    log(
        f"- **transfers: {transfer.per_second:.0f}/s = "
        f"{transfer.per_second / pgbench_tps:.2f} x pgbench TPC-B** (target >= 0.5)"
    )
    deposits: dict[int, Throughput] = {}
    for workers in cfg.deposit_workers:
        deposits[workers] = measure("deposit", workers, "deposits to distinct users")
    first, most = cfg.deposit_workers[0], max(cfg.deposit_workers)
    figures["deposit_1"] = deposits[first].per_second
    figures[f"deposit_{most}"] = deposits[most].per_second
    log(
        "- **deposit scaling: "
        + ", ".join(
            f"{w}: x{deposits[w].per_second / deposits[first].per_second:.2f}"
            for w in cfg.deposit_workers
        )
        + "** (target: 16 workers >= 3 x one worker)"
    )
    if not cfg.quick:
        control = measure(
            "deposit-one-user", most, "control: deposits all to ONE user (one row lock)"
        )
        figures["deposit_one_user"] = control.per_second

    figures.update(ledger_statement_pgbench(url, cfg, account_ids, node_id))

    started = time.perf_counter()
    report = run_checks()
    log(
        f"\n- ledger_check after the runs: {'OK' if report.ok else report.violations[:3]} "
        f"({report.journals} journals, {report.postings} postings, "
        f"{time.perf_counter() - started:.1f} s)"
    )
    if not report.ok:
        raise SystemExit("ledger invariants violated")
    return figures


# --- reads at 1k vs 1M postings ------------------------------------------------------------


def _median_ms(call, samples: int) -> float:
    call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _explain(call) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    plans = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query["sql"])
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


def reads_section(cfg: Config) -> None:
    from django.db import connection

    from accounts.models import User
    from ledger import selectors, services
    from ledger.models import Posting

    log("\n## Balance and statement reads against history length")
    node = services.node_asset_account_get_or_create(node_name="bench")
    rows = []
    plans: dict[int, dict[str, list[str]]] = {}
    for size in cfg.history_sizes:
        user = User.objects.create_user(username=f"history-{size}", password=None)
        account = services.user_account_get_or_create(user=user)
        seconds = build_history(account.pk, node.pk, size, tag=f"h{size}")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE ledger_posting")
            cursor.execute("ANALYZE ledger_journal")
            cursor.execute("ANALYZE ledger_account")
        count = Posting.objects.filter(account=account).count()
        middle = (
            Posting.objects.filter(account=account)
            .order_by("-id")
            .values_list("id", flat=True)[count // 2]
        )
        samples = cfg.read_samples

        def balance(user=user):
            return selectors.user_balance_msat(user=user)

        def first_page(account=account):
            return selectors.account_statement(account=account, limit=50)

        def deep_page(account=account, middle=middle):
            return selectors.account_statement(account=account, before=middle, limit=50)

        page = deep_page()
        assert len(page.lines) == 50 and page.lines[0].posting_id < middle
        rows.append(
            (
                count,
                seconds,
                _median_ms(balance, samples),
                _median_ms(first_page, samples),
                _median_ms(deep_page, samples),
            )
        )
        plans[count] = {
            "user_balance_msat": _explain(balance),
            "account_statement, first page": _explain(first_page),
            "account_statement, page from the middle (cursor)": _explain(deep_page),
        }
    log(
        "| postings on the account | build (s) | user_balance_msat | statement page 1 | "
        "statement deep page |"
    )
    log("|---:|---:|---:|---:|---:|")
    for count, seconds, bal, first, deep in rows:
        log(f"| {count:,} | {seconds:.1f} | {bal:.3f} ms | {first:.3f} ms | {deep:.3f} ms |")
    log(f"\n(median of {cfg.read_samples} calls each, through the selectors, Django included)")
    for count, explained_by_name in plans.items():
        log(f"\n### Plans at {count:,} postings (EXPLAIN ANALYZE of the selectors' SQL)")
        for name, explained in explained_by_name.items():
            for plan in explained:
                log(f"\n{name}:\n```\n{plan}\n```")

    # The node's asset account has as many postings as all histories together: its balance
    # is a checkpoint plus the postings since, not a scan.
    from ledger.models import Posting as P

    node_postings = P.objects.filter(account=node).count()

    def node_balance():
        return selectors.account_balance_msat(account=node)

    without = _median_ms(node_balance, max(3, samples // 50))
    services.hot_account_checkpoint()
    with_checkpoint = _median_ms(node_balance, samples)
    log(
        f"\n- hot node account ({node_postings:,} postings): balance without a checkpoint "
        f"{without:.1f} ms, after hot_account_checkpoint {with_checkpoint:.3f} ms"
    )


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny and short")
    parser.add_argument("--duration", type=float, help="seconds per throughput run")
    parser.add_argument("--skip-pgbench", action="store_true")
    parser.add_argument("--skip-reads", action="store_true")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.duration:
        cfg = Config(**{**cfg.__dict__, "duration": args.duration})

    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("the benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    total = time.perf_counter()
    dbname = urlparse(url).path.lstrip("/")
    recreate_database(url, dbname)
    django_setup(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    log(f"# Satledger ledger benchmark{' (quick)' if cfg.quick else ''}")
    log(f"- command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    log(f"- database: {dbname} (recreated and migrated)")
    machine_report()
    log(f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pgbench_tps = float("nan")
    if not args.skip_pgbench:
        log("")
        pgbench_tps = run_pgbench(url, cfg)
    throughput_section(url, cfg, pgbench_tps)
    if not args.skip_reads:
        reads_section(cfg)
    log(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    log(f"total benchmark time: {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
