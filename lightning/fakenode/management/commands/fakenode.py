"""Drive the simulated node's outside world from a shell (demos, manual tests).

    manage.py fakenode pay BOLT11 [--amount-msat N] [--node NAME]   an outside payer pays
    manage.py fakenode invoice [--amount-msat N] [--memo TEXT]      an outside payee's invoice
    manage.py fakenode mine [N]                                     mine N blocks (default 1)
    manage.py fakenode send-to ADDRESS --amount-sat N               the outside wallet pays
    manage.py fakenode fail-next [N] [--reason R] [--node NAME]     next N payments fail
    manage.py fakenode hang-next [N] [--node NAME]                  next N payments hang
    manage.py fakenode resolve --succeed|--fail [PAYMENT_HASH]      resolve hung payments
    manage.py fakenode down|up [--node NAME]                        node unreachable / back
    manage.py fakenode status [--node NAME]

`--node` defaults to the only registered node of kind "fake"; with several it is required;
with none the name is "fake". The last line of `invoice` is the BOLT 11 string, of `send-to`
the txid, of `pay` the preimage.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lightning.backends.base import Network
from lightning.connection import InvalidConnectionString, parse_connection_string
from lightning.fakenode import selectors, services
from lightning.fakenode.errors import FakeNodeError
from lightning.fakenode.models import FakeInvoice, FakeNode, FakePayment, FakePaymentStatus
from lightning.models import Node, NodeKind

DEFAULT_NODE_NAME = "fake"


def default_node_name(given: str | None) -> str:
    if given:
        return given
    names = list(Node.objects.filter(kind=NodeKind.FAKE).values_list("name", flat=True))
    if len(names) > 1:
        raise CommandError(f"several simulated nodes ({', '.join(names)}): give --node NAME")
    return names[0] if names else DEFAULT_NODE_NAME


def node_settings(name: str) -> services.NodeSettings | None:
    """The settings in the registered node's connection string, if there is one."""
    from lightning.backends.fake import FakeBackend

    node = Node.objects.filter(name=name, kind=NodeKind.FAKE).first()
    if node is None:
        return None
    try:
        parsed = parse_connection_string(node.connection)
        backend = FakeBackend.from_connection(
            parsed.params, node_name=name, network=Network.REGTEST, timeout_s=1
        )
    except InvalidConnectionString as error:
        raise CommandError(f"node {name}: {error}") from None
    return backend.settings


class Command(BaseCommand):
    help = "Drive the simulated Lightning node and the world around it."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        pay = commands.add_parser("pay", help="an outside payer pays one of our invoices")
        pay.add_argument("bolt11")
        pay.add_argument("--amount-msat", type=int, help="for an amountless invoice")
        pay.add_argument("--node", help="only if the invoice is this node's")

        invoice = commands.add_parser("invoice", help="an outside payee's invoice")
        invoice.add_argument("--amount-msat", type=int, help="omit for an amountless invoice")
        invoice.add_argument("--memo", default="")
        invoice.add_argument("--expiry", type=int, default=services.OUTSIDE_INVOICE_EXPIRY_S)

        mine = commands.add_parser("mine", help="mine blocks")
        mine.add_argument("blocks", nargs="?", type=int, default=1)

        send = commands.add_parser("send-to", help="the outside wallet pays an address")
        send.add_argument("address")
        send.add_argument("--amount-sat", type=int, required=True)

        fail = commands.add_parser("fail-next", help="the next N payments fail")
        fail.add_argument("count", nargs="?", type=int, default=1)
        fail.add_argument("--reason", default="no_route")
        self._node_option(fail)

        hang = commands.add_parser("hang-next", help="the next N payments hang")
        hang.add_argument("count", nargs="?", type=int, default=1)
        self._node_option(hang)

        resolve = commands.add_parser("resolve", help="resolve hung payments")
        outcome = resolve.add_mutually_exclusive_group(required=True)
        outcome.add_argument("--succeed", action="store_true")
        outcome.add_argument("--fail", action="store_true")
        resolve.add_argument("payment_hash", nargs="?", help="default: every hung payment")
        resolve.add_argument("--reason", default=services.HUNG_FAILURE_REASON)
        resolve.add_argument("--node", help="only this node's hung payments")

        for name, text in (("down", "make the node unreachable"), ("up", "bring it back")):
            self._node_option(commands.add_parser(name, help=text))
        self._node_option(commands.add_parser("status", help="show the simulated world"))

    @staticmethod
    def _node_option(parser: ArgumentParser) -> None:
        parser.add_argument("--node", help="simulated node name (default: the only fake node)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"].replace("-", "_")
        try:
            getattr(self, f"do_{action}")(options)
        except FakeNodeError as error:
            raise CommandError(f"{error.message} ({error.reason})") from None
        except ValueError as error:
            raise CommandError(str(error)) from None

    @property
    def network(self) -> Network:
        return Network(settings.LIGHTNING_NETWORK)

    def _node(self, options: dict[str, Any]) -> FakeNode:
        name = default_node_name(options.get("node"))
        return services.node_ensure(name=name, settings=node_settings(name))

    # --- actions -------------------------------------------------------------------------

    def do_pay(self, options: dict[str, Any]) -> None:
        invoice = services.invoice_pay_from_outside(
            bolt11=options["bolt11"],
            network=self.network,
            amount_msat=options["amount_msat"],
            node_name=options["node"],
        )
        self.stdout.write(
            f"settled payment_hash={invoice.payment_hash} node={invoice.node.name} "
            f"amount_received_msat={invoice.amount_received_msat} "
            f"settle_index={invoice.settle_index}"
        )
        self.stdout.write(invoice.preimage)

    def do_invoice(self, options: dict[str, Any]) -> None:
        invoice = services.outside_invoice_create(
            network=self.network,
            amount_msat=options["amount_msat"],
            memo=options["memo"],
            expiry_s=options["expiry"],
        )
        amount = invoice.amount_msat if invoice.amount_msat is not None else "any"
        self.stdout.write(
            f"outside invoice payment_hash={invoice.payment_hash} amount_msat={amount} "
            f"expires_at={invoice.expires_at.isoformat()}"
        )
        self.stdout.write(invoice.bolt11)

    def do_mine(self, options: dict[str, Any]) -> None:
        height = services.chain_mine(blocks=options["blocks"])
        self.stdout.write(f"mined {options['blocks']} block(s); height {height}")

    def do_send_to(self, options: dict[str, Any]) -> None:
        tx = services.onchain_receive(
            address=options["address"], amount_sat=options["amount_sat"], network=self.network
        )
        self.stdout.write(
            f"sent {options['amount_sat']} sat to {options['address']} (unconfirmed; mine to "
            "confirm)"
        )
        self.stdout.write(tx.txid)

    def do_fail_next(self, options: dict[str, Any]) -> None:
        node = self._node(options)
        services.node_fail_next(name=node.name, count=options["count"], reason=options["reason"])
        self.stdout.write(
            f"node {node.name}: the next {options['count']} payment(s) fail ({options['reason']})"
        )

    def do_hang_next(self, options: dict[str, Any]) -> None:
        node = self._node(options)
        services.node_hang_next(name=node.name, count=options["count"])
        self.stdout.write(f"node {node.name}: the next {options['count']} payment(s) hang")

    def do_resolve(self, options: dict[str, Any]) -> None:
        resolved = services.payments_resolve(
            succeed=options["succeed"],
            payment_hash=options["payment_hash"],
            node_name=options["node"],
            reason=options["reason"],
        )
        if not resolved:
            raise CommandError("no hung payment to resolve")
        for payment in resolved:
            detail = payment.failure_reason if payment.status == "failed" else payment.preimage
            self.stdout.write(f"{payment.payment_hash} {payment.status} {detail}")

    def do_down(self, options: dict[str, Any]) -> None:
        node = self._node(options)
        services.node_set_down(name=node.name, down=True)
        self.stdout.write(f"node {node.name} is down: every call raises NodeUnreachable")

    def do_up(self, options: dict[str, Any]) -> None:
        node = self._node(options)
        services.node_set_down(name=node.name, down=False)
        self.stdout.write(f"node {node.name} is up")

    def do_status(self, options: dict[str, Any]) -> None:
        nodes = [self._node(options)] if options.get("node") else list(FakeNode.objects.all())
        self.stdout.write(f"network {self.network}, block height {selectors.world_height()}")
        if not nodes:
            self.stdout.write("no simulated node has been used yet")
        for node in nodes:
            onchain = selectors.onchain_balance(node=node)
            invoices = FakeInvoice.objects.filter(node=node)
            pending = FakePayment.objects.filter(node=node, status=FakePaymentStatus.PENDING)
            self.stdout.write(
                "\n".join(
                    [
                        f"node {node.name} ({'DOWN' if node.down else 'up'}) "
                        f"alias={node.alias} pubkey={node.pubkey}",
                        f"  channels: local {node.local_msat} msat, remote {node.remote_msat} msat",
                        f"  on chain: {onchain.confirmed_sat} sat confirmed, "
                        f"{onchain.unconfirmed_sat} sat unconfirmed",
                        f"  fees: {node.fee_base_msat} msat + {node.fee_ppm} ppm",
                        f"  toggles: fail next {node.fail_next} ({node.fail_reason}), "
                        f"hang next {node.hang_next}",
                        f"  invoices: {invoices.filter(state='open').count()} open, "
                        f"{invoices.filter(state='settled').count()} settled "
                        f"(last settle_index {node.last_settle_index})",
                        f"  payments: {pending.count()} pending "
                        f"({pending.filter(hung=True).count()} hung)",
                    ]
                )
            )
