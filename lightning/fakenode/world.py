"""The world around one simulated node, as the backend contract tests drive it (and as demos
can): outside payers and payees, toggles, blocks, the outside wallet, the node going down."""

from __future__ import annotations

from lightning.backends.base import Network
from lightning.fakenode import services
from lightning.fakenode.models import FakeNode


class FakeWorld:
    def __init__(self, *, node_name: str, network: Network) -> None:
        self.node_name = node_name
        self.network = Network(network)

    def pay_from_outside(self, bolt11: str, *, amount_msat: int | None = None) -> None:
        services.invoice_pay_from_outside(
            bolt11=bolt11, network=self.network, amount_msat=amount_msat
        )

    def outside_invoice(self, *, amount_msat: int | None, memo: str = "") -> str:
        return services.outside_invoice_create(
            network=self.network, amount_msat=amount_msat, memo=memo
        ).bolt11

    def routing_fee_msat(self, amount_msat: int) -> int:
        return services.node_ensure(name=self.node_name).routing_fee_msat(amount_msat)

    def fail_next_payment(self, reason: str = "no_route") -> None:
        services.node_fail_next(name=self.node_name, count=1, reason=reason)

    def hang_next_payment(self) -> None:
        services.node_hang_next(name=self.node_name, count=1)

    def resolve_hung_payments(self, *, succeed: bool) -> None:
        services.payments_resolve(succeed=succeed, node_name=self.node_name)

    def mine(self, blocks: int) -> None:
        services.chain_mine(blocks=blocks)

    def receive_onchain(self, *, address: str, amount_sat: int) -> str:
        return services.onchain_receive(
            address=address, amount_sat=amount_sat, network=self.network
        ).txid

    def stop(self) -> None:
        services.node_set_down(name=self.node_name, down=True)

    def start(self) -> None:
        services.node_set_down(name=self.node_name, down=False)

    def node(self) -> FakeNode:
        return services.node_ensure(name=self.node_name)
