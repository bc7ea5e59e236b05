"""Operators manage nodes here: `nodes add NAME "CONNECTION" [--roles receive,send,onchain]
[--priority N]`, `nodes list [--json]`, `nodes enable NAME`, `nodes disable NAME`,
`nodes check [NAME]`. Connection strings are printed only redacted."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from lightning.connection import InvalidConnectionString
from lightning.models import Node
from lightning.nodes import node_add, node_check, node_set_enabled


class Command(BaseCommand):
    help = "Register, list, enable, disable and check Lightning nodes."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a node")
        add.add_argument("name")
        add.add_argument(
            "connection", help='e.g. "type=lnd-grpc;server=host:10009;macaroonfilepath=..."'
        )
        add.add_argument("--roles", default="receive,send,onchain")
        add.add_argument("--priority", type=int, default=100)
        add.add_argument("--no-check", action="store_true", help="do not contact the node now")
        listing = sub.add_parser("list", help="list nodes")
        listing.add_argument("--json", action="store_true", help="machine-readable output")
        for action in ("enable", "disable"):
            sub.add_parser(action).add_argument("name")
        check = sub.add_parser("check", help="reachability, auth, network, sync")
        check.add_argument("name", nargs="?")
        check.add_argument("--json", action="store_true")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"_{action}")(**options)

    def _add(
        self, *, name: str, connection: str, roles: str, priority: int, no_check: bool, **_
    ) -> None:
        try:
            node = node_add(
                name=name,
                connection=connection,
                roles=[role.strip() for role in roles.split(",") if role.strip()],
                priority=priority,
            )
        except (InvalidConnectionString, ValueError) as error:
            raise CommandError(str(error)) from None
        except IntegrityError:
            raise CommandError(f"a node named {name!r} already exists") from None
        self.stdout.write(f"added node {node.name}: {node.connection_redacted}")
        if not no_check:
            self._print_report(node_check(node=node))

    def _list(self, *, json: bool, **_) -> None:
        rows = [
            {
                "name": node.name,
                "kind": node.kind,
                "enabled": node.enabled,
                "roles": node.roles,
                "priority": node.priority,
                "health": {
                    "healthy": node.healthy,
                    "error": node.health_error,
                    "checked_at": node.health_checked_at.isoformat()
                    if node.health_checked_at
                    else None,
                    "block_height": node.block_height,
                },
                "connection": node.connection_redacted,
            }
            for node in Node.objects.all()
        ]
        if json:
            self.stdout.write(_json_dumps(rows))
            return
        if not rows:
            self.stdout.write("no nodes registered")
        for row in rows:
            state = "enabled" if row["enabled"] else "disabled"
            health = (
                "healthy"
                if row["health"]["healthy"]
                else f"unhealthy {row['health']['error']}".strip()
            )
            roles = ",".join(row["roles"])
            self.stdout.write(f"{row['name']:<16} {row['kind']:<7} {state:<9} {roles:<22} {health}")

    def _enable(self, *, name: str, **_) -> None:
        self._set_enabled(name, True)

    def _disable(self, *, name: str, **_) -> None:
        self._set_enabled(name, False)

    def _set_enabled(self, name: str, enabled: bool) -> None:
        try:
            node_set_enabled(name=name, enabled=enabled)
        except Node.DoesNotExist:
            raise CommandError(f"no node named {name!r}") from None
        self.stdout.write(f"node {name} {'enabled' if enabled else 'disabled'}")

    def _check(self, *, name: str | None, json: bool, **_) -> None:
        nodes = Node.objects.filter(name=name) if name else Node.objects.all()
        if name and not nodes:
            raise CommandError(f"no node named {name!r}")
        reports = [node_check(node=node, snapshot=True) for node in nodes]
        if json:
            self.stdout.write(_json_dumps([_report_dict(report) for report in reports]))
        else:
            for report in reports:
                self._print_report(report)
        if any(not report.healthy for report in reports):
            raise CommandError("some nodes are not healthy")

    def _print_report(self, report) -> None:
        marks = {True: "ok", False: "FAIL"}
        self.stdout.write(
            f"{report.node}: reachable {marks[report.reachable]}, "
            f"auth {marks[report.authenticated]}, "
            f"network {marks[report.network_ok]}, synced {marks[report.synced]}, "
            f"height {report.block_height}" + (f" - {report.error}" if report.error else "")
        )


def _report_dict(report) -> dict:
    return {
        "name": report.node,
        "healthy": report.healthy,
        "reachable": report.reachable,
        "authenticated": report.authenticated,
        "network_ok": report.network_ok,
        "synced": report.synced,
        "block_height": report.block_height,
        "error": report.error,
    }


def _json_dumps(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
