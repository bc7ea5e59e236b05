"""What one internal payment costs, in one process, without HTTP or other load.

Runs `POST /api/v1/withdrawals` for one of our own deposit invoices straight through the WSGI
application the web server serves (`config.wsgi`: the request the API benchmark sends, minus
the socket), N times, and prints per payment: wall time, this process's CPU (user and system)
and the CPU of its PostgreSQL backend (from /proc). Those move ±15 % between runs on a shared
VM; for A/B comparisons of the Python side, `--callgrind` runs the timed loop under valgrind
and prints the exact number of instructions per payment (repeatable to ~0.3 %).

The state (migrated database, simulated node, a funded payer, N open invoices of a payee) is
made once into the template database `satledger_payment_cost_tpl` and cloned for every run,
so runs of different trees start from the same rows. From the repository root:

    .venv/bin/python bench/payment_cost.py --payments 1500
    .venv/bin/python bench/payment_cost.py --payments 200 --callgrind
    .venv/bin/python bench/payment_cost.py --tree /tmp/other-checkout   # the same, another tree
    .venv/bin/python bench/payment_cost.py --payments 100 --pg-callgrind

`--pg-callgrind` counts the other side, PostgreSQL's: the instructions its backend runs per
payment (user space: the kernel's part of a commit, its fsync, is not counted). A private
server (initdb in a temporary folder, as the `postgres` user when run by root) runs under
callgrind, which follows its forks, so every backend writes its own count when it exits. A
backend's count includes its start and the warm-up, so the run is made twice, with N and 3N
payments: the difference over 2N is one payment (repeatable to ~0.05 %).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"  # --server
DATABASE = "satledger_payment_cost"  # --database; its template is <name>_tpl
WARMUP = 30  # payments before the timed loop: prepared statements, caches, first imports
PAYEE_INVOICE_MSAT = 100_000


def recreate(name: str, *, template: str | None = None) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        clause = f' TEMPLATE "{template}"' if template else ""
        connection.execute(f'CREATE DATABASE "{name}"{clause}')


def django_setup(*, tree: Path, database: str) -> None:
    sys.path.insert(0, str(tree))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"{SERVER}/{database}",
        DEBUG="0",
        SECRET_KEY="payment-cost-" + "x" * 40,
        ALLOWED_HOSTS="localhost",
        API_RATE_LIMIT="1000000/s",  # the limiter is not what this measures
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()


def make_template(*, tree: Path, invoices: int) -> None:
    """Migrate, register the simulated node, fund a payer, open the payee's invoices."""
    recreate(f"{DATABASE}_tpl")
    django_setup(tree=tree, database=f"{DATABASE}_tpl")
    from django.core.management import call_command

    from accounts.models import User
    from accounts.services import api_key_issue
    from lightning.nodes import node_add
    from lightning.services import deposit_create, invoices_poll_open

    call_command("migrate", verbosity=0)
    node = node_add(name="alpha", connection="type=fake", priority=10)
    node.healthy = True
    node.save(update_fields=["healthy"])
    payer = User.objects.create_user(username="payer")
    payee = User.objects.create_user(username="payee")
    api_key_issue(user=payer, name="payment-cost", scopes=["read", "receive", "send"])
    funding_msat = invoices * PAYEE_INVOICE_MSAT
    while funding_msat > 0:
        amount = min(funding_msat, 10_000_000_000)  # the largest deposit invoice
        invoice = deposit_create(user=payer, amount_msat=amount, memo="funding")
        call_command("fakenode", "pay", invoice.bolt11, "--node", "alpha", stdout=io.StringIO())
        funding_msat -= amount
    invoices_poll_open()
    for _ in range(invoices):
        deposit_create(user=payee, amount_msat=PAYEE_INVOICE_MSAT, memo="payment-cost")


def backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(*, tree: Path, callgrind: bool, report_backend: bool = False) -> None:
    recreate(DATABASE, template=f"{DATABASE}_tpl")
    django_setup(tree=tree, database=DATABASE)
    from django.db import connection

    from accounts.models import User
    from accounts.services import api_key_issue
    from lightning.models import Invoice, InvoiceStatus

    payer = User.objects.get(username="payer")
    _, plaintext = api_key_issue(user=payer, name="run", scopes=["send"])
    bolt11s = list(
        Invoice.objects.filter(user__username="payee", status=InvoiceStatus.OPEN)
        .order_by("id")
        .values_list("bolt11", flat=True)
    )
    from config.wsgi import application  # as the web server loads it

    def pay(bolt11: str) -> None:
        body = json.dumps({"bolt11": bolt11}).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/v1/withdrawals",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "localhost",
            "HTTP_AUTHORIZATION": f"Bearer {plaintext}",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
        }
        statuses: list[str] = []
        reply = b"".join(application(environ, lambda status, headers: statuses.append(status)))
        if not statuses[0].startswith("201"):
            raise SystemExit(f"payment refused: {statuses[0]} {reply[:300]!r}")

    for bolt11 in bolt11s[:WARMUP]:
        pay(bolt11)
    timed = bolt11s[WARMUP:]
    backend = connection.connection.info.backend_pid
    if report_backend:
        print(f"PostgreSQL backend pid {backend}", flush=True)
    if callgrind:
        subprocess.run(
            ["callgrind_control", "--instr=on", str(os.getpid())], check=True, capture_output=True
        )
    times, wall, backend_before = os.times(), time.perf_counter(), backend_cpu_s(backend)
    for bolt11 in timed:
        pay(bolt11)
    wall = time.perf_counter() - wall
    after, backend_used = os.times(), backend_cpu_s(backend) - backend_before
    if callgrind:
        subprocess.run(
            ["callgrind_control", "--instr=off", str(os.getpid())], check=True, capture_output=True
        )
    count = len(timed)
    print(
        f"{count} internal payments through the WSGI handler ({tree}), per payment: "
        f"wall {wall / count * 1e6:,.0f} µs, this process's CPU "
        f"{(after.user - times.user) / count * 1e6:,.0f} µs user + "
        f"{(after.system - times.system) / count * 1e6:,.0f} µs system, "
        f"PostgreSQL backend {backend_used / count * 1e6:,.0f} µs"
    )


def probe_arguments(*, tree: Path, payments: int, server: str, database: str) -> tuple[str, ...]:
    """This script's arguments for a child run of the same probe."""
    return (
        *("--tree", str(tree), "--payments", str(payments)),
        *("--server", server, "--database", database),
    )


def callgrind_total(output: Path) -> int | None:
    """The instruction count in a callgrind output file (None until it is written)."""
    if output.exists():
        for line in output.read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
    return None


def need_valgrind(option: str) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit(f"{option} needs valgrind (apt-get install valgrind)")


def under_callgrind(*, payments: int, forwarded: tuple[str, ...]) -> None:
    """Re-run this script's timed loop under callgrind; print instructions per payment."""
    need_valgrind("--callgrind")
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={output}",
                sys.executable,
                __file__,
                *forwarded,
                "--callgrind-child",
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        totals = callgrind_total(output)
    if totals is None:
        raise SystemExit("callgrind wrote no count")
    print(f"callgrind: {totals // payments:,} instructions per payment (Python side)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise SystemExit("--pg-callgrind needs PostgreSQL's server binaries (/usr/lib/postgresql)")
    return Path(found[-1]).parent


@contextmanager
def postgres_under_callgrind(folder: Path) -> Iterator[str]:
    """A private PostgreSQL server under callgrind; yields its URL (no database)."""
    bindir = _postgres_bindir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, port = folder / "data", _free_port()
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{folder}'\nautovacuum = off\njit = off\n"
        )
    server = subprocess.Popen(
        [
            *as_postgres,
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={folder}/callgrind.%p",
            str(bindir / "postgres"),
            "-D",
            str(data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgres://postgres@127.0.0.1:{port}"
    try:
        import psycopg

        deadline = time.monotonic() + 180
        while True:
            try:
                psycopg.connect(f"{url}/postgres").close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(
                        "the PostgreSQL server under callgrind did not start"
                    ) from None
                time.sleep(1)
        yield url
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast"],
            capture_output=True,
        )
        server.wait(timeout=120)


def backend_instructions(
    *, url: str, folder: Path, tree: Path, payments: int, keep: Path | None = None
) -> int:
    """Run the probe against `url`; the total instructions of the backend that served it.
    `keep`: a folder to copy that backend's callgrind file into, for callgrind_annotate."""
    forwarded = probe_arguments(tree=tree, payments=payments, server=url, database=DATABASE)
    run = subprocess.run(
        [sys.executable, __file__, *forwarded, "--report-backend"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = next(
        line.split()[-1]
        for line in run.stdout.splitlines()
        if line.startswith("PostgreSQL backend")
    )
    output = folder / f"callgrind.{pid}"
    deadline = time.monotonic() + 120  # the backend writes its count when it exits
    while time.monotonic() < deadline:
        total = callgrind_total(output)
        if total is not None:
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(output, keep / f"callgrind.pg.{payments}")
            return total
        time.sleep(0.5)
    raise SystemExit(f"no callgrind count from PostgreSQL backend {pid}")


def pg_under_callgrind(*, payments: int, tree: Path, keep: Path | None = None) -> None:
    need_valgrind("--pg-callgrind")
    folder = Path(tempfile.mkdtemp(prefix="satledger-pg-callgrind-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, user="postgres")
        with postgres_under_callgrind(folder) as url:
            few, more = (
                backend_instructions(url=url, folder=folder, tree=tree, payments=n, keep=keep)
                for n in (payments, 3 * payments)
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"callgrind: {(more - few) // (2 * payments):,} instructions per payment (PostgreSQL "
        f"backend, user space; {payments} and {3 * payments} payments: {few:,} and {more:,})"
    )


def main() -> None:
    global SERVER, DATABASE  # the other functions read them
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1500, help="timed payments")
    parser.add_argument("--tree", default=str(REPO), help="the Satledger checkout to run")
    parser.add_argument("--callgrind", action="store_true", help="count instructions")
    parser.add_argument(
        "--pg-callgrind",
        action="store_true",
        help="count PostgreSQL's instructions per payment (a private server under callgrind)",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="with --pg-callgrind: keep the two backends' callgrind files in DIR "
        "(callgrind.pg.N; callgrind_annotate --inclusive=yes reads them)",
    )
    parser.add_argument("--report-backend", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default=DATABASE, help="database to (re)create")
    # the timed loop alone, under callgrind (started by --callgrind)
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-template", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    SERVER, DATABASE = args.server, args.database
    tree = Path(args.tree).resolve()
    forwarded = probe_arguments(tree=tree, payments=args.payments, server=SERVER, database=DATABASE)
    if args.make_template:
        make_template(tree=tree, invoices=args.payments + WARMUP)
        return
    if args.callgrind_child:
        run(tree=tree, callgrind=True)
        return
    if args.pg_callgrind:  # its children make their templates on the private server
        keep = Path(args.keep).resolve() if args.keep else None
        pg_under_callgrind(payments=args.payments, tree=tree, keep=keep)
        return
    # The template is made by a child process, so that this one's Django runs on the clone.
    subprocess.run(
        [
            sys.executable,
            __file__,
            *forwarded,
            "--make-template",
        ],
        check=True,
    )
    if args.callgrind:
        under_callgrind(payments=args.payments, forwarded=forwarded)
    else:
        run(tree=tree, callgrind=False, report_backend=args.report_backend)


if __name__ == "__main__":
    main()
