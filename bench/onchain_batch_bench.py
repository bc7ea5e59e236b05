"""Benchmark of the on-chain batch job: N queued withdrawals (default 10,000) are batched,
sent through the simulated node and posted in the ledger by ONE call of the job's round.
Prints the round's wall time and its database queries per request (all of them: ours, the
ledger's and the simulated node's, which shares the database), then runs the ledger checks.

    DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/satledger_onchain \\
        python bench/onchain_batch_bench.py [--requests 10000] [--max-outputs 250]

It works in a throw-away test database (test_<name>, created and dropped here), never in the
configured one."""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from embit.bech32 import encode  # noqa: E402


def outside_address(index: int) -> str:
    """A distinct valid regtest P2WPKH address nobody here owns."""
    program = hashlib.sha256(f"bench-{index}".encode()).digest()[:20]
    return encode("bcrt", 0, list(program))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--max-outputs", type=int, default=settings.ONCHAIN_BATCH_MAX_OUTPUTS)
    parser.add_argument("--profile", action="store_true", help="print the round's hot spots")
    args = parser.parse_args()

    setup_test_environment()
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        return run(args)
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)


def run(args: argparse.Namespace) -> int:
    from accounts.models import User
    from ledger import services as ledger
    from ledger.checks import run_checks
    from lightning.fakenode.models import FakeTransaction
    from lightning.nodes import node_add
    from onchain import services
    from onchain.models import OnchainWithdrawal

    settings.ONCHAIN_BATCH_MAX_OUTPUTS = args.max_outputs
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 10**15
    amount_sat = 10_000
    node_add(name="bench", connection=f"type=fake;onchain_sat={args.requests * amount_sat * 2}")

    print(f"setup: {args.users} users, {args.requests} queued withdrawals ...", flush=True)
    started = time.perf_counter()
    users = User.objects.bulk_create(User(username=f"bench{i}") for i in range(args.users))
    node_account = ledger.node_asset_account_get_or_create(node_name="bench", rail="onchain")
    per_user = args.requests // args.users + 1
    for user in users:
        ledger.transfer(
            idempotency_key=f"bench-fund:{user.pk}",
            kind="deposit",
            debit=node_account,
            credit=ledger.user_account_get_or_create(user=user),
            amount_msat=per_user
            * ((amount_sat + args.requests) * 1000 + settings.ONCHAIN_FEE_RESERVE_SAT * 1000),
        )
    for index in range(args.requests):
        services.withdrawal_request(
            user=users[index % len(users)],
            address=outside_address(index),
            amount_sat=amount_sat + index,
        )
    print(f"setup took {time.perf_counter() - started:.1f} s", flush=True)

    kinds: Counter[str] = Counter()

    def count(execute, sql, params, many, context):
        kinds[sql.split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = services.batch_round()
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    queries = sum(kinds.values())

    sent = OnchainWithdrawal.objects.filter(status="broadcast").count()
    transactions = FakeTransaction.objects.filter(node__name="bench").count()
    checks = run_checks()
    print(f"database: {connection.vendor}, batch size {args.max_outputs}")
    print(f"round: {len(report.sent)} batches broadcast, {sent}/{args.requests} requests posted")
    print(f"simulated node saw {transactions} transactions")
    print(f"round time: {elapsed:.2f} s ({elapsed / args.requests * 1000:.3f} ms per request)")
    print(f"queries: {queries} ({queries / args.requests:.2f} per request)")
    print("  by statement: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    print(f"ledger checks: {'ok' if checks.ok else checks.violations}")
    return 0 if checks.ok and sent == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
