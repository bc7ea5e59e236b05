"""Satledger's REST API against LNbits under the same load, in the same run.

Both services are started here as they run in production, on this machine only (127.0.0.1):

- Satledger: `scripts/serve` (granian serving `config.wsgi:application`, a connection pool per
  process) on PostgreSQL, DEBUG=0, the simulated node, and the invoice listener
  (`manage.py listen`) running beside it (`--server gunicorn`: the server it replaced);
- LNbits (PyPI `lnbits`, in its own virtual environment, created here when missing): its
  `lnbits` console script (uvicorn + uvloop, one process: LNbits keeps its task manager, cache
  and invoice listeners in memory, so it does not run several workers), started from its
  site-packages folder, FakeWallet funding source, PostgreSQL, every outbound feature off.

Then the same client load goes to both (16 concurrent clients by default, spread over a few
client processes so that the driver is not the bottleneck), one workload after the other:

- deposit invoices: each client creates invoices for its own user/wallet (fixed duration);
- internal payments: client i's payer pays the invoices client i's payee created, for the same
  fixed duration (`--payments N`: a fixed count per client instead, the method before session 9);
- attack: 50 concurrent payments, each of a different payee invoice for the attacker's whole
  balance; exactly one may succeed, and the balances are checked afterwards.

It prints req/s, p50/p99 latency, errors and the Satledger/LNbits ratios, checks the targets
(>= 3x deposits/s, >= 10x internal payments/s, lower p99, exactly one success in each attack)
and exits non-zero when a check fails. Figures and how to read them: bench/RESULTS.md.

Run it with Satledger's virtual environment, from the repository root:

    .venv/bin/python bench/api_vs_lnbits.py --rounds 3     # full run, ~8 minutes
    .venv/bin/python bench/api_vs_lnbits.py --lnbits-only
    .venv/bin/python bench/api_vs_lnbits.py --help
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # every request of this script goes here and nowhere else
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
LNBITS_VERSION = "1.6.2"
# bolt11 2.x (an LNbits dependency) imports a name that bitstring 5 removed.
LNBITS_PIP_REQUIREMENTS = [f"lnbits=={LNBITS_VERSION}", "bitstring<5"]

SAT = 1000  # msat


class BenchError(Exception):
    """A setup step failed; the message says which and what to do."""


# --------------------------------------------------------------------------------------------
# HTTP client: HTTP/1.1 on one keep-alive socket per client thread, written for this load. It
# shares the 2 cores with the servers, so its CPU per request is taken from them: stdlib
# http.client cost ~0.27 ms per internal payment here (its header parsing goes through the
# email package), this one half of that (bench/RESULTS.md, "Session 4"). A connection the
# server closed (gunicorn's sync workers close after every response) is reopened on the next
# request.
# --------------------------------------------------------------------------------------------


class Http:
    def __init__(self, port: int, headers: dict[str, str], timeout: float = 60.0):
        self.port = port
        self.timeout = timeout
        fixed = {
            "Host": f"{HOST}:{port}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            **headers,
        }
        self.fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer = b""

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None):
        """Return (status, parsed JSON or text)."""
        data = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        length = f"Content-Length: {len(data)}\r\n" if body is not None else ""
        message = f"{method} {path} HTTP/1.1\r\n{self.fixed_headers}{extra}{length}\r\n".encode()
        for attempt in (1, 2):
            if self.sock is None:
                self.connect()
            try:
                self.sock.sendall(message + data)
                status, close, raw = self._response(head_only=method == "HEAD")
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed an idle keep-alive connection before we reused it
                self.close()
                if attempt == 2:
                    raise
        if close:
            self.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")[:500]
        return status, payload

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise http.client.RemoteDisconnected("the server closed the connection")
        self.buffer += chunk

    def _response(self, *, head_only: bool) -> tuple[int, bool, bytes]:
        """(status, whether the server closes the connection, body) of the next response."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        status_line, *header_lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise http.client.BadStatusLine(status_line.decode(errors="replace"))
        status = int(parts[1])
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        close = fields.get(b"connection") == b"close" or parts[0] == b"HTTP/1.0"
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, close, b""
        if fields.get(b"transfer-encoding") == b"chunked":
            return status, close, self._chunked_body()
        if b"content-length" in fields:
            length = int(fields[b"content-length"])
            while len(self.buffer) < length:
                self._receive()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            return status, close, body
        with contextlib.suppress(http.client.RemoteDisconnected):  # the body ends at close
            while True:
                self._receive()
        body, self.buffer = self.buffer, b""
        return status, True, body

    def _chunked_body(self) -> bytes:
        body = b""
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._receive()
            size = int(self.buffer[:end].split(b";")[0], 16)
            while len(self.buffer) < end + 2 + size + 2:
                self._receive()
            body += self.buffer[end + 2 : end + 2 + size]
            self.buffer = self.buffer[end + 2 + size + 2 :]
            if size == 0:
                return body


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server on port {port} exited with code {proc.returncode}")
        try:
            status, _ = Http(port, {}, timeout=5).request("GET", path)
            if status < 500:
                return
            last = status
        except OSError as error:
            last = error
        time.sleep(0.3)
    raise BenchError(f"server on port {port} did not answer {path} within {timeout}s ({last})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Processes we start (each in its own session, stopped by its own process-group id) and the
# CPU they use (from /proc).
# --------------------------------------------------------------------------------------------


class Procs:
    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], *, env: dict, cwd: Path) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child)
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for _name, proc in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each pid still alive, in seconds."""
    result = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            result[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            continue
    return result


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait since boot (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_for_quiet(max_cores: float = 0.15, timeout: float = 120.0) -> float:
    """Wait until the machine used less than `max_cores` over a second (work one system left
    behind, e.g. a queue still draining after its phase, would otherwise run during the other
    system's phase). Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - before < max_cores:
            break
    return time.monotonic() - started


class CpuMeter:
    """CPU seconds used by the server's process tree and by its database's backends."""

    def __init__(self, root_pid: int | None, dbname: str):
        self.root_pid = root_pid
        self.dbname = dbname

    def pids(self) -> tuple[list[int], list[int]]:
        server = proc_tree(self.root_pid) if self.root_pid else []
        return server, pg_backend_pids(self.dbname)

    def snapshot(self) -> tuple[dict[int, float], dict[int, float]]:
        server, database = self.pids()
        return cpu_seconds(server), cpu_seconds(database)

    @staticmethod
    def delta(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# --------------------------------------------------------------------------------------------
# PostgreSQL (psycopg from Satledger's environment)
# --------------------------------------------------------------------------------------------


def pg_recreate(dbname: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def pg_claim(dbnames: list[str]):
    """Hold a session advisory lock per database name for the whole run, so that two runs of
    this script cannot drop each other's databases (DROP ... WITH (FORCE) mid-run). Returns the
    connection holding the locks (closed at exit), or raises BenchError."""
    import psycopg

    conn = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    for name in dbnames:
        key = f"bench/api_vs_lnbits:{name}"
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
            conn.close()
            raise BenchError(
                f"another run of bench/api_vs_lnbits.py is using the database {name!r} on this "
                "PostgreSQL server: wait for it to finish (two runs at once would also skew both "
                "runs' figures), or pass other --satledger-db/--lnbits-db names"
            )
    return conn


def pg_backend_pids(dbname: str) -> list[int]:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
    except psycopg.Error:
        return []
    return [row[0] for row in rows]


def pg_version() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# --------------------------------------------------------------------------------------------
# The two systems behind one small interface: create an invoice, pay one, read a balance.
# --------------------------------------------------------------------------------------------


@dataclass
class Wallet:
    name: str
    headers: dict[str, str]  # credentials able to receive and send
    wallet_id: str = ""


@dataclass
class System:
    name: str
    port: int = 0
    root_pid: int | None = None
    dbname: str = ""
    notes: list[str] = field(default_factory=list)
    invoices: list[list[str]] = field(default_factory=list)  # unpaid payee invoices, per client


def request_shape(system: str, kind: str, value: Any) -> tuple[str, str, dict]:
    """(method, path, body) of one request of `kind` on `system`."""
    if kind == "balance":
        return "GET", "/api/v1/balance" if system == "satledger" else "/api/v1/wallet", None
    if system == "satledger":
        if kind == "invoice":
            return "POST", "/api/v1/deposits", {"amount_msat": value * SAT, "memo": "bench"}
        return "POST", "/api/v1/withdrawals", {"bolt11": value}
    if kind == "invoice":
        return "POST", "/api/v1/payments", {"out": False, "amount": value, "memo": "bench"}
    return "POST", "/api/v1/payments", {"out": True, "bolt11": value}


def response_outcome(system: str, kind: str, status: int, payload: Any) -> tuple[bool, str]:
    """(succeeded, label). An invoice succeeds when it has a bolt11; a payment when the
    service says it is paid (Satledger: status in a settled-like state; LNbits: success)."""
    if not isinstance(payload, dict):
        return False, f"http {status}"
    if status >= 400:
        code = payload.get("error", {}).get("code") if system == "satledger" else None
        detail = payload.get("detail") if system == "lnbits" else None
        label = code or (str(detail)[:40] if detail else "")
        return False, f"http {status} {label}".strip()
    if kind == "balance":
        return status == 200, f"http {status}"
    if kind == "invoice":
        bolt11 = payload.get("bolt11") or payload.get("payment_request")
        return bool(bolt11), f"http {status}"
    state = str(payload.get("status", "?"))
    paid = state.lower() in {"succeeded", "success", "settled", "complete", "completed", "paid"}
    return paid, f"http {status} {state}"


def bolt11_of(payload: Any) -> str | None:
    if isinstance(payload, dict):
        return payload.get("bolt11") or payload.get("payment_request")
    return None


def amount_msat_of(payload: Any) -> int:
    if not isinstance(payload, dict):
        return -1
    if "balance_msat" in payload:
        return int(payload["balance_msat"])
    return int(payload.get("balance", -1))


# --------------------------------------------------------------------------------------------
# Satledger
# --------------------------------------------------------------------------------------------


class Satledger(System):
    def __init__(self, args: argparse.Namespace, procs: Procs, logdir: Path):
        super().__init__(name="satledger", dbname=args.satledger_db)
        self.args = args
        self.procs = procs
        self.logdir = logdir
        self.python = args.satledger_python
        self.repo = Path(args.satledger_repo).resolve()
        secret = secrets.token_urlsafe(48)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(logdir),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.repo),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.dbname}",
            "SECRET_KEY": secret,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LIGHTNING_DEFAULT_NODE": "type=fake",
            # The per-key limit (default 120/min) would measure the limiter, not the service.
            "API_RATE_LIMIT": "1000000/s",
        }
        for item in args.satledger_env:
            key, _, value = item.partition("=")
            self.env[key] = value

    def manage(self, *argv: str, timeout: float = 300, check: bool = True):
        result = subprocess.run(
            [self.python, "manage.py", *argv],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise BenchError(
                f"`manage.py {' '.join(argv)[:80]}` failed (exit {result.returncode}):\n"
                + (result.stderr or result.stdout)[-2000:]
            )
        return result

    def missing_commands(self) -> list[str]:
        listing = self.manage("help", "--commands").stdout.split()
        wanted = {
            "migrate": "Django",
            "issue_api_key": "API keys (accounts)",
            "listen": "the invoice listener",
            "ledger_check": "the ledger invariant check",
        }
        missing = [
            f"  manage.py {name}: {why}" for name, why in wanted.items() if name not in listing
        ]
        if {"payments", "attack"} & set(self.args.workloads) and "fakenode" not in listing:
            missing.append(
                "  manage.py fakenode: the simulated node's outside payer (`fakenode pay BOLT11`)"
            )
        if "ensure_default_node" not in listing and "nodes" not in listing:
            missing.append("  manage.py ensure_default_node or nodes: registering the fake node")
        return missing

    def missing_endpoints(self) -> list[str]:
        """Endpoints of the contract that answer 404/405 (checked without credentials: a
        present endpoint answers 401/403)."""
        client = Http(self.port, {})
        missing = []
        wanted = [("GET", "/api/v1/balance")]
        if {"deposits", "payments", "attack"} & set(self.args.workloads):
            wanted.append(("POST", "/api/v1/deposits"))
        if {"payments", "attack"} & set(self.args.workloads):
            wanted.append(("POST", "/api/v1/withdrawals"))
        for method, path in wanted:
            status, _ = client.request(method, path, {} if method == "POST" else None)
            if status in (404, 405):
                missing.append(f"  {method} {path} -> {status}")
        return missing

    def start(self) -> None:
        """Migrate, register the fake node, start the web server and the listener; then check the
        contract and fail with everything that is missing at once."""
        missing = self.missing_commands()
        if any("migrate" in line or "listen" in line for line in missing):
            raise BenchError("Satledger cannot start:\n" + "\n".join(missing))
        pg_recreate(self.dbname)
        self.manage("migrate", "--noinput")
        listing = self.manage("help", "--commands").stdout.split()
        if "ensure_default_node" in listing:
            self.manage("ensure_default_node")
        else:
            self.manage("nodes", "add", "default", "type=fake", "--no-check")
        self.port = self.args.satledger_port or free_port()
        argv = self.server_argv()
        proc = self.procs.start(f"satledger-{self.args.server}", argv, env=self.env, cwd=self.repo)
        self.root_pid = proc.pid
        self.procs.start(
            "satledger-listen", [self.python, "manage.py", "listen"], env=self.env, cwd=self.repo
        )
        wait_http(self.port, "/api/v1/balance", 60, proc)
        missing += self.missing_endpoints()
        if "issue_api_key" not in " ".join(missing):
            # what exists works? one key, one balance read
            wallet = self.create_wallets(["preflight"])[0]
            status, payload = Http(self.port, wallet.headers).request("GET", "/api/v1/balance")
            print(f"  preflight: issue_api_key ok; GET /api/v1/balance -> {status} {payload}")
        if missing:
            raise BenchError(
                "Satledger lacks what this benchmark needs (merge main when it lands, or run "
                "with --lnbits-only):\n" + "\n".join(missing)
            )
        self.notes.append(self.server_note(argv))

    def server_note(self, argv: list[str]) -> str:
        if self.args.server == "granian":
            keys = ("GRANIAN_WORKERS", "GRANIAN_BLOCKING_THREADS", "DB_POOL_SIZE")
            settings = " ".join(f"{key}={self.env[key]}" for key in keys if key in self.env)
            return f"scripts/serve (granian) {settings}".rstrip()
        return " ".join([Path(argv[0]).name, *argv[1:]])

    def server_argv(self) -> list[str]:
        """The web server's command line. granian: the repository's scripts/serve, the
        production command, configured by its environment (set in start())."""
        if self.args.server == "granian":
            self.env.update(
                PYTHON=self.python,
                GRANIAN_HOST=HOST,
                GRANIAN_PORT=str(self.port),
                GRANIAN_WORKERS=str(self.args.workers),
                GRANIAN_BLOCKING_THREADS=str(self.args.threads),
            )
            return [str(Path(self.repo) / "scripts" / "serve")]
        argv = [
            str(Path(self.python).with_name("gunicorn")),
            "config.wsgi:application",
            "-w",
            str(self.args.workers),
            "-b",
            f"{HOST}:{self.port}",
            "--worker-class",
            self.args.worker_class,
            "--backlog",
            "2048",
        ]
        if self.args.worker_class == "gthread":
            argv += ["--threads", str(self.args.threads)]
        return argv

    def create_wallets(self, names: list[str]) -> list[Wallet]:
        """One user and API key per name, all in one Django process (the command's own code,
        called through call_command)."""
        code = (
            "import io, json\n"
            "from django.core.management import call_command\n"
            f"names = {names!r}\n"
            "keys = {}\n"
            "for name in names:\n"
            "    out = io.StringIO()\n"
            "    call_command('issue_api_key', name, scopes='read,receive,send',"
            " create_user=True, stdout=out, stderr=io.StringIO())\n"
            "    keys[name] = out.getvalue().strip().splitlines()[-1].strip()\n"
            "print('KEYS=' + json.dumps(keys))\n"
        )
        output = self.manage("shell", "-c", code).stdout
        line = next(line for line in output.splitlines() if line.startswith("KEYS="))
        keys = json.loads(line[5:])
        return [Wallet(name, {"Authorization": f"Bearer {keys[name]}"}) for name in names]

    def fund(self, wallets: list[Wallet], amount_sat: int) -> None:
        """A deposit invoice per wallet, paid by the simulated node's outside payer; then
        wait for the listener to credit them."""
        bolt11s = []
        for wallet in wallets:
            status, payload = Http(self.port, wallet.headers).request(
                "POST", "/api/v1/deposits", {"amount_msat": amount_sat * SAT, "memo": "funding"}
            )
            if status != 201 or not bolt11_of(payload):
                raise BenchError(f"funding invoice for {wallet.name}: {status} {payload}")
            bolt11s.append(bolt11_of(payload))
        code = (
            "import io\n"
            "from django.core.management import call_command\n"
            f"for bolt11 in {bolt11s!r}:\n"
            "    call_command('fakenode', 'pay', bolt11, stdout=io.StringIO())\n"
        )
        self.manage("shell", "-c", code)
        self.wait_balances(wallets, amount_sat * SAT)

    def wait_balances(self, wallets: list[Wallet], at_least_msat: int, timeout=120.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(wallets)
        while pending and time.monotonic() < deadline:
            pending = [w for w in pending if self.balance_msat(w) < at_least_msat]
            if pending:
                time.sleep(0.5)
        if pending:
            raise BenchError(
                f"{len(pending)} Satledger deposits not credited after {timeout}s: is the "
                "listener (`manage.py listen`) crediting? See its log in the run folder."
            )

    def balance_msat(self, wallet: Wallet) -> int:
        status, payload = Http(self.port, wallet.headers).request("GET", "/api/v1/balance")
        if status != 200:
            raise BenchError(f"GET /api/v1/balance for {wallet.name}: {status} {payload}")
        return amount_msat_of(payload)

    def ledger_check(self) -> str:
        result = self.manage("ledger_check", check=False)
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
        return f"exit {result.returncode}: {tail[0][:160]}"


# --------------------------------------------------------------------------------------------
# LNbits
# --------------------------------------------------------------------------------------------


def lnbits_env(data_dir: Path, dbname: str, port: int) -> dict[str, str]:
    """Environment of the LNbits process: FakeWallet, PostgreSQL, and nothing that reaches out
    of this machine (see bench/RESULTS.md, "LNbits startup")."""
    dead_proxy = "http://127.0.0.1:9"  # any HTTP call that slips through fails here, locally
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(data_dir),
        "LANG": "C.UTF-8",
        "HOST": HOST,
        "PORT": str(port),
        "LNBITS_DATA_FOLDER": str(data_dir),
        "LNBITS_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{dbname}",
        "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
        "FAKE_WALLET_SECRET": secrets.token_hex(16),
        "AUTH_SECRET_KEY": secrets.token_hex(32),
        "LNBITS_ADMIN_UI": "true",  # its default; the super user tops wallets up
        # no extension manifests, reviews, builder stubs, nothing to install or restore
        "LNBITS_EXTENSIONS_MANIFESTS": "[]",
        "LNBITS_WASM_EXTENSIONS_MANIFESTS": "[]",
        "LNBITS_EXTENSIONS_DEFAULT_INSTALL": "[]",
        "LNBITS_EXTENSIONS_DEACTIVATE_ALL": "true",
        "LNBITS_EXTENSIONS_REVIEWS_URL": "",
        "LNBITS_EXTENSIONS_BUILDER_MANIFEST_URL": "",
        # no price feeds: no aggregator, no exchange-rate providers
        "LNBITS_PRICE_AGGREGATOR_ENABLED": "false",
        "LNBITS_PRICE_AGGREGATOR_URL": "",
        "LNBITS_EXCHANGE_RATE_PROVIDERS": "[]",
        "LNBITS_EXCHANGE_HISTORY_REFRESH_INTERVAL_SECONDS": "86400",
        # no notifications (their defaults are already off), no status pings
        "LNBITS_NOSTR_NOTIFICATIONS_ENABLED": "false",
        "LNBITS_TELEGRAM_NOTIFICATIONS_ENABLED": "false",
        "LNBITS_EMAIL_NOTIFICATIONS_ENABLED": "false",
        "LNBITS_NOTIFICATION_SERVER_START_STOP": "false",
        "LNBITS_BLOCKEXPLORER_ENABLED": "false",
        # the rate limit (200/minute per IP) would measure the limiter, not the service
        "LNBITS_RATE_LIMIT_NO": "100000000",
        "LNBITS_RATE_LIMIT_UNIT": "minute",
        "AUTH_HTTPS_ONLY": "false",
        "ENABLE_LOG_TO_FILE": "false",
        "HTTP_PROXY": dead_proxy,
        "HTTPS_PROXY": dead_proxy,
        "ALL_PROXY": dead_proxy,
        "http_proxy": dead_proxy,
        "https_proxy": dead_proxy,
        "all_proxy": dead_proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


class LNbits(System):
    def __init__(self, args: argparse.Namespace, procs: Procs, logdir: Path):
        super().__init__(name="lnbits", dbname=args.lnbits_db)
        self.args = args
        self.procs = procs
        self.logdir = logdir
        self.venv = Path(args.lnbits_venv)
        self.token = ""

    def ensure_venv(self) -> Path:
        """LNbits' virtual environment (created when missing) and its site-packages folder.
        Importing lnbits writes ./data/.lnbits_auth_key: probe from the run folder."""
        python = self.venv / "bin" / "python"
        probe_env = {"PATH": "/usr/bin:/bin", "LNBITS_DATA_FOLDER": str(self.logdir / "probe")}
        code = (
            "import importlib.metadata as m, os, lnbits; "
            "print(m.version('lnbits')); print(os.path.dirname(os.path.dirname(lnbits.__file__)))"
        )

        def probe() -> list[str]:
            if not python.exists():
                return []
            result = subprocess.run(
                [str(python), "-c", code],
                capture_output=True,
                text=True,
                cwd=self.logdir,
                env=probe_env,
            )
            return result.stdout.split() if result.returncode == 0 else []

        found = probe()
        if not found or found[0] != LNBITS_VERSION:
            print(f"creating {self.venv} with lnbits=={LNBITS_VERSION} (a few minutes) ...")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *LNBITS_PIP_REQUIREMENTS], check=True
            )
            found = probe()
            if not found:
                raise BenchError(f"lnbits did not install into {self.venv}")
        return Path(found[1])

    def start(self) -> None:
        site_packages = self.ensure_venv()
        pg_recreate(self.dbname)
        self.port = self.args.lnbits_port or free_port()
        data_dir = self.logdir / "lnbits-data"
        data_dir.mkdir()
        env = lnbits_env(data_dir, self.dbname, self.port)
        argv = [str(self.venv / "bin" / "lnbits"), "--host", HOST, "--port", str(self.port)]
        proc = self.procs.start("lnbits", argv, env=env, cwd=site_packages)
        self.root_pid = proc.pid
        wait_http(self.port, "/api/v1/health", 120, proc)
        # First install: give the super user a login, which the top-up endpoint requires.
        password = secrets.token_urlsafe(16)
        status, payload = Http(self.port, {}).request(
            "PUT",
            "/api/v1/auth/first_install",
            {"username": "benchadmin", "password": password, "password_repeat": password},
        )
        if status != 200 or not isinstance(payload, dict) or "access_token" not in payload:
            raise BenchError(f"LNbits first install: {status} {payload}")
        self.token = payload["access_token"]
        self.notes.append(f"lnbits {LNBITS_VERSION}: 1 process (uvicorn+uvloop), PostgreSQL")

    def create_wallets(self, names: list[str]) -> list[Wallet]:
        wallets = []
        for name in names:
            status, payload = Http(self.port, {}).request("POST", "/api/v1/account", {"name": name})
            if status != 200 or "adminkey" not in payload:
                raise BenchError(f"LNbits account for {name}: {status} {payload}")
            wallet = Wallet(name, {"X-Api-Key": payload["adminkey"]}, payload["id"])
            # A plain sat wallet, as Satledger's: no fiat amounts computed for each payment
            # (with no price feed reachable they would only fail, per payment).
            status, _ = Http(self.port, wallet.headers).request(
                "PATCH", "/api/v1/wallet", {"currency": ""}
            )
            if status != 200:
                raise BenchError(f"LNbits wallet currency for {name}: {status}")
            wallets.append(wallet)
        return wallets

    def fund(self, wallets: list[Wallet], amount_sat: int) -> None:
        admin = Http(self.port, {"Authorization": f"Bearer {self.token}"})
        for wallet in wallets:
            status, payload = admin.request(
                "PUT", "/users/api/v1/balance", {"id": wallet.wallet_id, "amount": amount_sat}
            )
            if status != 200:
                raise BenchError(f"LNbits top-up of {wallet.name}: {status} {payload}")

    def balance_msat(self, wallet: Wallet) -> int:
        status, payload = Http(self.port, wallet.headers).request("GET", "/api/v1/wallet")
        if status != 200:
            raise BenchError(f"LNbits GET /api/v1/wallet for {wallet.name}: {status} {payload}")
        return amount_msat_of(payload)

    def outbound_connections(self) -> list[str]:
        """Sockets of the LNbits processes whose peer is not on this machine."""
        pids = set(proc_tree(self.root_pid)) if self.root_pid else set()
        found = []
        for pid in pids:
            try:
                inodes = {
                    os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
                    for fd in os.listdir(f"/proc/{pid}/fd")
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                }
            except OSError:
                continue
            for table in ("tcp", "tcp6", "udp", "udp6"):
                try:
                    lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except OSError:
                    continue
                for line in lines:
                    cols = line.split()
                    remote, inode = cols[2], cols[9]
                    if inode not in inodes:
                        continue
                    host = remote.split(":")[0]
                    if set(host) <= {"0"}:
                        continue  # listening or unconnected
                    if table.endswith("6"):
                        loopback = host in ("00000000000000000000000001000000",) or host.endswith(
                            "0000FFFF0100007F"
                        )
                    else:
                        loopback = host.endswith("7F")  # 127.x.x.x, little-endian
                    if not loopback:
                        found.append(f"{table} pid {pid} -> {remote}")
        return found


# --------------------------------------------------------------------------------------------
# Load driver: `procs` client processes, each running its share of the clients as threads,
# all starting together at an agreed time.
# --------------------------------------------------------------------------------------------


@dataclass
class ClientJob:
    system: str
    kind: str  # "invoice", "pay" or "balance"
    port: int
    headers: dict[str, str]
    amount_sat: int = 0
    bolt11s: list[str] = field(default_factory=list)  # for "pay": what to pay, in order


def _client_thread(job: ClientJob, start_at: float, stop_at: float, out: dict) -> None:
    client = Http(job.port, job.headers)
    latencies, outcomes, created = [], Counter(), []
    paying = job.kind == "pay"
    timed = stop_at > start_at or not paying  # fixed-count payers stop only when done
    index = 0
    with contextlib.suppress(OSError):
        client.connect()
    while time.time() < start_at:
        time.sleep(0.0005)
    first = last = time.perf_counter()
    while True:
        # A payer stops at the deadline (timed runs) or when its invoices are used up
        # (fixed-count runs; in a timed run that is reported as running out).
        if timed and time.time() >= stop_at:
            break
        if paying:
            if index >= len(job.bolt11s):
                break
            value: Any = job.bolt11s[index]
        else:
            value = job.amount_sat
        index += 1
        method, path, body = request_shape(job.system, job.kind, value)
        began = time.perf_counter()
        try:
            status, payload = client.request(method, path, body)
            ok, label = response_outcome(job.system, job.kind, status, payload)
        except (OSError, http.client.HTTPException) as error:
            client.close()
            client = Http(job.port, job.headers)
            ok, label, payload = False, type(error).__name__, None
        last = time.perf_counter()
        latencies.append((last - began, ok))
        outcomes[label] += 1
        if ok and job.kind == "invoice":
            created.append(bolt11_of(payload))
    client.close()
    ran_out = paying and timed and index >= len(job.bolt11s) and time.time() < stop_at
    out.update(
        latencies=latencies,
        outcomes=outcomes,
        created=created,
        first=first,
        last=last,
        used=index,
        ran_out=ran_out,
    )


def _client_process(jobs: list[ClientJob], start_at: float, stop_at: float) -> dict:
    cpu_before = os.times()
    results: list[dict] = [{} for _ in jobs]
    threads = [
        threading.Thread(target=_client_thread, args=(job, start_at, stop_at, results[i]))
        for i, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {"results": results, "cpu": cpu}


PROFILE_DIR: Path | None = None  # set by --profile
PROFILE_WALL = True  # --profile-cpu: sample only threads on CPU


def summarize_profile(path: Path, top: int = 25) -> None:
    """Print where the web server's workers spent the time they were serving a request (on CPU or
    waiting: py-spy samples idle threads too): inclusive and leaf share per frame, from
    py-spy's collapsed stacks, restricted to stacks inside a request."""
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        if "get_response (django/core/handlers/base.py" not in stack:
            continue  # a worker waiting for a request
        total += n
        frames = [f.split(":")[0] if "(" in f else f for f in stack.split(";")[1:]]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            leaf[frames[-1]] += n
    if not total:
        return
    report = [f"profile {path.name}: {total} samples in requests (all workers)", "  inclusive:"]
    report += [
        f"    {n * 100 / total:5.1f}%  {frame}"
        for frame, n in inclusive.most_common(top)
        if n < total
    ]
    report.append("  self:")
    report += [f"    {n * 100 / total:5.1f}%  {frame}" for frame, n in leaf.most_common(15)]
    text = "\n".join(report)
    path.with_suffix(".txt").write_text(text + "\n")
    print(text)


@dataclass
class PhaseResult:
    system: str
    workload: str
    count: int
    ok: int
    elapsed: float
    latencies: list[float]
    outcomes: Counter
    created: list[list[str]]
    client_cpu: float
    server_cpu: float
    db_cpu: float
    other_cpu: float  # everything else on the machine during the phase
    load: float
    # per client: requests made, i.e. invoices taken by a payer (paid or not)
    used: list[int] = field(default_factory=list)
    ran_out: int = 0  # timed payments: clients whose invoices ran out before the deadline

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.count - self.ok

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_phase(
    pool, n_procs: int, system: System, workload: str, jobs: list[ClientJob], duration: float
) -> PhaseResult:
    meter = CpuMeter(system.root_pid, system.dbname)
    chunks = [jobs[i::n_procs] for i in range(n_procs)]
    order = [list(range(len(jobs)))[i::n_procs] for i in range(n_procs)]
    server_before, db_before = meter.snapshot()
    machine_before = machine_busy_seconds()
    profiler = None
    if PROFILE_DIR and system.name == "satledger" and workload != "warmup":
        out = PROFILE_DIR / f"{workload.replace(' ', '-')}.collapsed"
        profiler = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(system.root_pid),
                "--subprocesses",
                "--format",
                "raw",
                "--rate",
                "100",
                *(["--idle"] if PROFILE_WALL else []),
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    start_at = time.time() + 1.0
    stop_at = start_at + duration
    async_results = [
        pool.apply_async(_client_process, (chunk, start_at, stop_at)) for chunk in chunks if chunk
    ]
    outputs = [result.get(timeout=duration + 600) for result in async_results]
    server_after, db_after = meter.snapshot()
    machine = machine_busy_seconds() - machine_before
    load = os.getloadavg()[0]
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)
        summarize_profile(out)
    per_client: list[dict] = [{} for _ in jobs]
    for indexes, output in zip(order, outputs, strict=False):
        for index, result in zip(indexes, output["results"], strict=True):
            per_client[index] = result
    latencies = [lat for res in per_client for lat, _ in res["latencies"]]
    ok = sum(1 for res in per_client for _, good in res["latencies"] if good)
    outcomes: Counter = Counter()
    for res in per_client:
        outcomes.update(res["outcomes"])
    client_cpu = sum(output["cpu"] for output in outputs)
    server_cpu = CpuMeter.delta(server_before, server_after)
    db_cpu = CpuMeter.delta(db_before, db_after)
    first = min(res["first"] for res in per_client)
    last = max(res["last"] for res in per_client)
    return PhaseResult(
        system=system.name,
        workload=workload,
        count=len(latencies),
        ok=ok,
        elapsed=last - first,
        latencies=latencies,
        outcomes=outcomes,
        created=[res["created"] for res in per_client],
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        db_cpu=db_cpu,
        other_cpu=max(0.0, machine - client_cpu - server_cpu - db_cpu),
        load=load,
        used=[res["used"] for res in per_client],
        ran_out=sum(1 for res in per_client if res["ran_out"]),
    )


# --------------------------------------------------------------------------------------------
# Attack: N concurrent spends of the whole balance.
# --------------------------------------------------------------------------------------------


@dataclass
class AttackResult:
    system: str
    attempts: int
    succeeded: int
    outcomes: Counter
    balance_before: int
    attacker_after: int
    payee_after: int
    payee_before: int
    extra: str = ""

    @property
    def conserved(self) -> bool:
        moved_out = self.balance_before - self.attacker_after
        moved_in = self.payee_after - self.payee_before
        return moved_out == moved_in

    @property
    def passed(self) -> bool:
        return (
            self.succeeded == 1
            and self.attacker_after >= 0
            and self.conserved
            and self.payee_after - self.payee_before == self.balance_before
        )


def run_attack(system: System, attacker: Wallet, payee: Wallet, n: int, amount_sat: int):
    invoices = []
    client = Http(system.port, payee.headers)
    for _ in range(n):
        method, path, body = request_shape(system.name, "invoice", amount_sat)
        status, payload = client.request(method, path, body)
        if not bolt11_of(payload):
            raise BenchError(f"{system.name} attack invoice: {status} {payload}")
        invoices.append(bolt11_of(payload))
    before = system.balance_msat(attacker)
    payee_before = system.balance_msat(payee)
    barrier = threading.Barrier(n)
    results: list[tuple[bool, str]] = [(False, "not run")] * n

    def spend(i: int) -> None:
        http_client = Http(system.port, attacker.headers)
        with contextlib.suppress(OSError):
            http_client.connect()
        barrier.wait()
        method, path, body = request_shape(system.name, "pay", invoices[i])
        try:
            status, payload = http_client.request(method, path, body)
            results[i] = response_outcome(system.name, "pay", status, payload)
        except (OSError, http.client.HTTPException) as error:
            results[i] = (False, type(error).__name__)
        http_client.close()

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.0)
    return AttackResult(
        system=system.name,
        attempts=n,
        succeeded=sum(1 for ok, _ in results if ok),
        outcomes=Counter(label for _, label in results),
        balance_before=before,
        attacker_after=system.balance_msat(attacker),
        payee_after=system.balance_msat(payee),
        payee_before=payee_before,
    )


# --------------------------------------------------------------------------------------------
# Orchestration and report
# --------------------------------------------------------------------------------------------


def prepare_users(system: System, clients: int, fund_sat: int | None):
    """payees[i] receive (their invoices are the deposit workload), payers[i] pay them;
    attacker/attack_payee for the attack run. Payers get `fund_sat` each when given."""
    names = [f"payee{i:02d}" for i in range(clients)] + [f"payer{i:02d}" for i in range(clients)]
    names += ["attacker", "attackpayee"]
    wallets = system.create_wallets(names)
    payees, payers = wallets[:clients], wallets[clients : 2 * clients]
    attacker, attack_payee = wallets[-2], wallets[-1]
    if fund_sat:
        system.fund(payers, fund_sat)
    return payees, payers, attacker, attack_payee


def top_up_invoices(
    system: System, payees: list[Wallet], need: int, amount_sat: int
) -> tuple[int, float]:
    """Make sure payee i has `need` unpaid invoices: each payee creates its own, one by one,
    all payees at once (untimed). Returns how many were created and in how many seconds."""
    if not system.invoices:
        system.invoices = [[] for _ in payees]
    errors: list[str] = []

    def top_up(i: int) -> None:
        client = Http(system.port, payees[i].headers)
        try:
            while len(system.invoices[i]) < need and not errors:
                method, path, body = request_shape(system.name, "invoice", amount_sat)
                status, payload = client.request(method, path, body)
                if not bolt11_of(payload):
                    errors.append(f"{system.name} invoice: {status} {payload}")
                    return
                system.invoices[i].append(bolt11_of(payload))
        finally:
            client.close()

    before = sum(len(invoices) for invoices in system.invoices)
    began = time.perf_counter()
    threads = [threading.Thread(target=top_up, args=(i,)) for i in range(len(payees))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise BenchError(errors[0])
    return sum(len(invoices) for invoices in system.invoices) - before, seconds


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value == value else "-"


def print_table(rows: list[PhaseResult], out=sys.stdout) -> list[str]:
    lines = [
        "| workload | system | req/s | p50 ms | p99 ms | ok | errors | client CPU | "
        "server CPU | db CPU | other CPU | load1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.workload} | {row.system} | {row.rate:.1f} | {fmt_ms(row.pct(0.50))} | "
            f"{fmt_ms(row.pct(0.99))} | {row.ok} | {row.errors} | "
            f"{row.client_cpu / row.elapsed:.2f} | {row.server_cpu / row.elapsed:.2f} | "
            f"{row.db_cpu / row.elapsed:.2f} | {row.other_cpu / row.elapsed:.2f} | "
            f"{row.load:.1f} |"
        )
    for line in lines:
        print(line, file=out)
    return lines


WORKLOADS = ("deposits", "payments", "attack", "reads")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--clients", type=int, default=16, help="concurrent clients (default 16)")
    add("--client-procs", type=int, default=2, help="client processes (default 2)")
    add(
        "--duration",
        type=float,
        default=20.0,
        help="seconds per timed run (deposits, payments, reads)",
    )
    add("--warmup", type=float, default=3.0, help="seconds of warmup, not measured")
    add(
        "--payments",
        type=int,
        default=None,
        help="internal payments per client, a fixed count (default: pay for --duration seconds, "
        "as the deposits run)",
    )
    add("--rounds", type=int, default=1, help="repeat the workloads, alternating the order")
    add("--attack", type=int, default=50, help="concurrent spends in the attack run")
    add("--amount-sat", type=int, default=100, help="invoice amount, sat")
    add(
        "--workloads",
        default="deposits,payments,attack",
        help=f"comma-separated subset of {','.join(WORKLOADS)} (reads: authenticated balance "
        "reads, a baseline of the framework's cost)",
    )
    add(
        "--server",
        default="granian",
        choices=["granian", "gunicorn"],
        help="granian: scripts/serve, the production command (default); gunicorn: gunicorn "
        "config.wsgi, the server it replaced, for comparison",
    )
    add("--workers", type=int, default=2, help="web server processes (default 2)")
    add("--worker-class", default="gthread", choices=["sync", "gthread"])
    add(
        "--threads",
        type=int,
        default=4,
        help="threads per process (granian blocking threads, gunicorn gthread; default 4)",
    )
    add(
        "--satledger-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for Satledger's processes (repeatable)",
    )
    add("--satledger-python", default=sys.executable)
    add("--satledger-db", default="satledger_bench_api")
    add(
        "--satledger-repo",
        default=str(REPO),
        help="Satledger source tree to run (default: this checkout; another one for what-if runs)",
    )
    add("--satledger-port", type=int, default=0)
    add("--lnbits-venv", default=str(REPO / "bench" / ".lnbits-venv"))
    add("--lnbits-db", default="lnbits_bench")
    add("--lnbits-port", type=int, default=0)
    add("--lnbits-only", action="store_true", help="skip Satledger")
    add("--satledger-only", action="store_true", help="skip LNbits")
    add("--pause", action="store_true", help="wait for Enter before stopping the servers")
    add("--json", help="also write the figures to this file")
    add(
        "--profile-cpu",
        action="store_true",
        help="profile CPU time only (default: wall time in requests, waits included)",
    )
    add(
        "--profile",
        metavar="DIR",
        help="py-spy record Satledger's web server processes during each timed run into DIR "
        "(py-spy in Satledger's environment: pip install py-spy)",
    )
    args = parser.parse_args()
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def run_workloads(args, systems, users, rows) -> None:
    ctx = mp.get_context("fork")
    with ctx.Pool(args.client_procs) as pool:

        def phase(system, workload, jobs, duration):
            waited = wait_for_quiet()
            if waited > 1.5:
                print(f"  (waited {waited:.0f} s for the machine to be quiet)", flush=True)
            run_phase(pool, args.client_procs, system, "warmup", jobs[1], args.warmup)
            stamp = time.strftime("%H:%M:%S")
            print(f"  {stamp} {workload} on {system.name} ...", flush=True)
            result = run_phase(pool, args.client_procs, system, workload, jobs[0], duration)
            rows.append(result)
            return result

        for round_no in range(args.rounds):
            order = systems if round_no % 2 == 0 else list(reversed(systems))
            print(f"round {round_no + 1}")
            if "reads" in args.workloads:
                for system in order:
                    payees = users[system.name][0]
                    jobs = [
                        ClientJob(system.name, "balance", system.port, w.headers) for w in payees
                    ]
                    phase(system, "balance reads", (jobs, jobs), args.duration)
            if "deposits" in args.workloads:
                for system in order:
                    payees = users[system.name][0]
                    jobs = [
                        ClientJob(system.name, "invoice", system.port, w.headers, args.amount_sat)
                        for w in payees
                    ]
                    result = phase(system, "deposit invoices", (jobs, jobs), args.duration)
                    if not system.invoices:
                        system.invoices = [[] for _ in payees]
                    for i, created in enumerate(result.created):
                        system.invoices[i].extend(created)
            if "payments" in args.workloads:
                for system in order:
                    payees, payers = users[system.name][:2]
                    timed = args.payments is None
                    if timed:
                        need = WARM_PAYMENTS + payment_invoices_needed(args, system, payees, rows)
                    else:
                        need = WARM_PAYMENTS + args.payments
                    top_up_invoices(system, payees, need, args.amount_sat)
                    warm, jobs = [], []
                    for i, payer in enumerate(payers):
                        todo = system.invoices[i][:need]
                        del system.invoices[i][:need]
                        warm.append(
                            ClientJob(
                                system.name,
                                "pay",
                                system.port,
                                payer.headers,
                                bolt11s=todo[:WARM_PAYMENTS],
                            )
                        )
                        jobs.append(
                            ClientJob(
                                system.name,
                                "pay",
                                system.port,
                                payer.headers,
                                bolt11s=todo[WARM_PAYMENTS:],
                            )
                        )
                    duration = args.duration if timed else 0
                    result = phase(system, "internal payments", (jobs, warm), duration)
                    # Invoices a timed run did not reach go back for the next round; an
                    # attempted one never does (its payment may have gone through).
                    for i, job in enumerate(jobs):
                        system.invoices[i][:0] = job.bolt11s[result.used[i] :]


# Internal payments per client before each timed run, not measured.
WARM_PAYMENTS = 10
# Timed payments: invoices prepared per client, as a multiple of what the system's fastest rate
# measured so far in this run (deposits or payments) would use in the run's duration, divided
# evenly. Clients are not served evenly: the kernel hands the 16 connections to the web server's
# processes unevenly and each process shares its CPU among its own, so one client may make twice
# the mean (seen: 231..610 payments per client in one 10 s round). A client that still runs out
# before the deadline makes the run fail (the rate would be understated).
PAYMENT_INVOICE_MARGIN = 3.0
# Timed payments: each payer is funded for this many payments per round.
PAYMENTS_FUNDED_PER_ROUND = 6000


def payment_invoices_needed(args, system: System, payees: list[Wallet], rows) -> int:
    """Invoices per client for a timed payments run on `system`."""
    rates = [row.rate for row in rows if row.system == system.name]
    if not rates:  # nothing measured yet (a payments-only run): time a first top-up, long
        # enough that the server's first requests (imports, caches, pool) do not dominate it
        created, seconds = top_up_invoices(system, payees, WARM_PAYMENTS + 200, args.amount_sat)
        rates = [created / seconds] if created and seconds > 0 else []
    if not rates:
        raise BenchError(f"{system.name}: no rate to size the payments run by")
    per_client = int(PAYMENT_INVOICE_MARGIN * max(rates) * args.duration / len(payees)) + 1
    if per_client > PAYMENTS_FUNDED_PER_ROUND:
        raise BenchError(
            f"{system.name} would need {per_client} payments per payer and round; payers are "
            f"funded for {PAYMENTS_FUNDED_PER_ROUND} (PAYMENTS_FUNDED_PER_ROUND)"
        )
    print(f"  ({per_client} invoices per client for {args.duration:g} s of payments)")
    return per_client


def main() -> int:
    global PROFILE_DIR, PROFILE_WALL
    args = parse_args()
    PROFILE_WALL = not args.profile_cpu
    if args.profile:
        PROFILE_DIR = Path(args.profile).resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="satledger-vs-lnbits-"))
    procs = Procs(logdir)
    print(f"run folder (server logs): {logdir}")
    print(
        f"machine: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
        f"{platform.platform()}, Python {platform.python_version()}, "
        f"PostgreSQL {pg_version()}, load1 {os.getloadavg()[0]:.1f}"
    )
    systems: list[System] = []
    if not args.lnbits_only:
        systems.append(Satledger(args, procs, logdir))
    if not args.satledger_only:
        systems.append(LNbits(args, procs, logdir))
    needs_funds = bool({"payments", "attack"} & set(args.workloads))
    per_round = PAYMENTS_FUNDED_PER_ROUND if args.payments is None else args.payments * 2
    fund_sat = args.amount_sat * (per_round + 20) * args.rounds if needs_funds else None
    failures: list[str] = []
    rows: list[PhaseResult] = []
    attacks: list[AttackResult] = []
    claim = None
    try:
        claim = pg_claim([system.dbname for system in systems])
        users = {}
        for system in systems:
            print(f"starting {system.name} ...", flush=True)
            system.start()
            print(f"  {system.name} on {HOST}:{system.port}; creating wallets ...", flush=True)
            users[system.name] = prepare_users(system, args.clients, fund_sat)
        run_workloads(args, systems, users, rows)
        if "attack" in args.workloads:
            for system in systems:
                _, _, attacker, attack_payee = users[system.name]
                system.fund([attacker], args.amount_sat * 10)
                balance = system.balance_msat(attacker)
                print(f"attack on {system.name}: {args.attack} concurrent spends of {balance} msat")
                attack = run_attack(system, attacker, attack_payee, args.attack, balance // SAT)
                if isinstance(system, Satledger):
                    attack.extra = "ledger_check " + system.ledger_check()
                attacks.append(attack)
        for system in systems:
            if isinstance(system, LNbits):
                outbound = system.outbound_connections()
                print(f"LNbits connections off this machine at the end: {outbound or 'none'}")
                if outbound:
                    failures.append(f"LNbits reached out: {outbound}")
    except BenchError as error:
        print(f"\nBENCH SETUP FAILED: {error}\n(server logs: {logdir})", file=sys.stderr)
        return 2
    finally:
        if args.pause:
            input("paused; Enter stops the servers ")
        procs.stop_all()
        if claim is not None:
            claim.close()
    failures += report(args, systems, rows, attacks)
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nall checks passed")
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


def report(args, systems, rows, attacks) -> list[str]:
    failures = []
    print()
    print(
        f"{args.clients} clients over {args.client_procs} client processes; timed runs "
        f"{args.duration:g}s after {args.warmup:g}s warmup (internal payments: "
        f"{'timed too' if args.payments is None else f'{args.payments} per client'}, after "
        f"{WARM_PAYMENTS} warmup payments per client); amount {args.amount_sat} sat; "
        f"rounds {args.rounds}"
    )
    for system in systems:
        print(f"{system.name}: {'; '.join(system.notes)}")
    print(
        f"CPU columns: cores used on average during the timed run (this machine has "
        f"{os.cpu_count()}); other: the rest of the machine (the other system, the database's "
        "own processes, the kernel). Each phase starts once the machine is quiet."
    )
    print_table(rows)
    for row in rows:
        # requests per client: how evenly the server shared itself among the connections
        print(
            f"  {row.workload} / {row.system}: {dict(row.outcomes)}; per client "
            f"{min(row.used)}..{max(row.used)}"
        )
        if row.ran_out:
            failures.append(
                f"{row.workload} on {row.system}: {row.ran_out} clients ran out of invoices "
                f"before the deadline (raise PAYMENT_INVOICE_MARGIN)"
            )
    print()
    summary: dict[str, Any] = {"args": vars(args), "rows": [], "attacks": [], "ratios": {}}
    targets = {"deposit invoices": 3.0, "internal payments": 10.0, "balance reads": None}
    for workload, target in targets.items():
        sat = [r for r in rows if r.workload == workload and r.system == "satledger"]
        lnb = [r for r in rows if r.workload == workload and r.system == "lnbits"]
        if not sat or not lnb:
            continue
        sat_rate = statistics.median(r.rate for r in sat)
        lnb_rate = statistics.median(r.rate for r in lnb)
        sat_p99 = statistics.median(r.pct(0.99) for r in sat)
        lnb_p99 = statistics.median(r.pct(0.99) for r in lnb)
        # Rows come in round order, one per system and round. The ratio is the median of the
        # per-round ratios: the two systems of a round ran minutes apart, under the same load
        # from whatever else shares the machine.
        per_round = [
            a.rate / b.rate if b.rate else float("inf") for a, b in zip(sat, lnb, strict=True)
        ]
        ratio = statistics.median(per_round)
        line = (
            f"{workload}: Satledger {sat_rate:.1f}/s vs LNbits {lnb_rate:.1f}/s (medians); "
            f"ratio {ratio:.2f}x (median of rounds: "
            f"{', '.join(f'{r:.2f}' for r in per_round)}); "
            f"p99 {sat_p99:.1f} ms vs {lnb_p99:.1f} ms"
        )
        verdict = "-"
        if target is not None:
            verdict = "MET" if ratio >= target and sat_p99 < lnb_p99 else "MISSED"
            line += f" (target >= {target:g}x and a lower p99) -> {verdict}"
            if verdict != "MET":
                failures.append(f"{workload}: target missed ({ratio:.2f}x)")
        print(line)
        summary["ratios"][workload] = {
            "ratio": ratio,
            "per_round": per_round,
            "target": target,
            "verdict": verdict,
        }
    for attack in attacks:
        print(
            f"attack {attack.system}: {attack.succeeded}/{attack.attempts} succeeded "
            f"{dict(attack.outcomes)}; attacker {attack.balance_before} -> "
            f"{attack.attacker_after} msat, payee +{attack.payee_after - attack.payee_before} "
            f"msat; conserved={attack.conserved} -> {'OK' if attack.passed else 'FAILED'} "
            f"{attack.extra}"
        )
        if not attack.passed:
            failures.append(f"{attack.system} attack: {attack.succeeded} successes")
        if attack.extra and "exit 0" not in attack.extra:
            failures.append(f"{attack.system} {attack.extra}")
    if args.json:
        summary["rows"] = [
            {
                "workload": r.workload,
                "system": r.system,
                "rate": r.rate,
                "p50_ms": r.pct(0.5),
                "p99_ms": r.pct(0.99),
                "ok": r.ok,
                "errors": r.errors,
                "outcomes": dict(r.outcomes),
                "client_cpu": r.client_cpu / r.elapsed,
                "server_cpu": r.server_cpu / r.elapsed,
                "db_cpu": r.db_cpu / r.elapsed,
                "other_cpu": r.other_cpu / r.elapsed,
                "load1": r.load,
                "ran_out": r.ran_out,
            }
            for r in rows
        ]
        summary["attacks"] = [
            {
                "system": a.system,
                "succeeded": a.succeeded,
                "attempts": a.attempts,
                "outcomes": dict(a.outcomes),
                "passed": a.passed,
                "extra": a.extra,
            }
            for a in attacks
        ]
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return failures


if __name__ == "__main__":
    sys.exit(main())
