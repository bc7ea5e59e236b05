"""The one interface every Lightning node backend implements.

Results are small frozen dataclasses; amounts on Lightning are integer millisatoshi, amounts on
chain integer satoshi (as the nodes count them). Errors form a small hierarchy whose meaning
the money flows rely on:

- `NodeUnreachable`: the node did not answer (connect failure, timeout before the request was
  accepted). For a payment this means *certainly not sent* only when raised by `pay_invoice`
  before the request left us; backends raise `OutcomeUnknown` otherwise.
- `NodeAuthFailed`: the node refused our credentials.
- `NodeRejected`: the node understood the request and refused it, with a reason; nothing was
  done (for a payment: certainly not sent).
- `OutcomeUnknown`: the request may or may not have been carried out (timeout after sending,
  connection dropped mid-call). A payment in this state must stay pending until
  `lookup_payment` gives a final answer; it is never retried elsewhere and never failed.

Every call has a timeout (`timeout_s`); secrets (macaroons, passwords, rune) never appear in
an exception message or a log line.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


class Network(enum.StrEnum):
    REGTEST = "regtest"
    SIGNET = "signet"
    TESTNET = "testnet"
    MAINNET = "mainnet"


# BOLT 11 human-readable prefixes (checked before anything else when decoding).
BOLT11_PREFIX = {
    Network.MAINNET: "lnbc",
    Network.TESTNET: "lntb",
    Network.SIGNET: "lntbs",
    Network.REGTEST: "lnbcrt",
}


# --- errors -------------------------------------------------------------------------------


class LightningError(Exception):
    code = "lightning_error"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class NodeUnreachable(LightningError):
    code = "node_unavailable"


class NodeAuthFailed(LightningError):
    code = "node_auth_failed"


class NodeRejected(LightningError):
    """The node refused the request; nothing happened. `reason` is a short stable word when
    the backend can tell (e.g. "not_found", "insufficient_balance", "already_paid",
    "invoice_expired", "no_route", "invalid_invoice", "invalid_address")."""

    code = "node_rejected"


class OutcomeUnknown(LightningError):
    code = "outcome_unknown"


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    alias: str
    pubkey: str  # hex, 33-byte compressed
    network: Network
    block_height: int
    synced_to_chain: bool
    version: str = ""


@dataclass(frozen=True, slots=True)
class Balances:
    channel_local_msat: int  # outbound liquidity: what we can send
    channel_remote_msat: int  # inbound liquidity: what we can receive
    onchain_confirmed_sat: int
    onchain_unconfirmed_sat: int


class InvoiceState(enum.StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    CANCELED = "canceled"  # cancelled or expired on the node; can no longer be paid


@dataclass(frozen=True, slots=True)
class CreatedInvoice:
    payment_hash: str  # hex
    bolt11: str
    amount_msat: int | None  # None: amountless
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    payment_hash: str
    state: InvoiceState
    amount_msat: int | None  # what the invoice asked for
    amount_received_msat: int  # what actually arrived (may exceed the amount asked)
    preimage: str | None  # hex, when the backend gives it
    settled_at: datetime | None
    label: str = ""  # CLN label / Eclair externalId / LND memo, as created


@dataclass(frozen=True, slots=True)
class InvoiceSettlement:
    """One settled invoice from `stream_settled_invoices`, with the cursor to persist once it
    has been handled (resuming from that cursor yields only later settlements)."""

    invoice: InvoiceStatus
    cursor: str


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_FOUND = "not_found"  # the node has no payment with this hash


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment_hash: str
    status: PaymentStatus
    amount_msat: int | None = None  # amount delivered to the payee, without fee
    fee_msat: int | None = None
    preimage: str | None = None
    failure_reason: str = ""


@dataclass(frozen=True, slots=True)
class DecodedInvoice:
    payment_hash: str
    amount_msat: int | None
    description: str
    description_hash: str | None
    payee: str  # hex pubkey
    created_at: datetime
    expires_at: datetime
    network: Network
    min_final_cltv_expiry: int = 18


@dataclass(frozen=True, slots=True)
class FeeEstimate:
    fee_sat: int
    sat_per_vbyte: int


@dataclass(frozen=True, slots=True)
class OnchainOutput:
    address: str
    amount_sat: int
    ours: bool = False  # pays to one of the node's own addresses


@dataclass(frozen=True, slots=True)
class OnchainTransaction:
    txid: str
    confirmations: int
    fee_sat: int | None  # known for our own sends
    label: str = ""
    outputs: tuple[OnchainOutput, ...] = field(default_factory=tuple)
    block_height: int | None = None


# --- the interface ------------------------------------------------------------------------


class LightningBackend(abc.ABC):
    """One node. Instances are cheap to build and may hold a connection; they are used from
    one thread at a time (build one per thread/process)."""

    kind: str = ""  # connection-string `type=` value

    def __init__(self, *, node_name: str, network: Network, timeout_s: float) -> None:
        self.node_name = node_name
        self.network = network
        self.timeout_s = timeout_s

    @classmethod
    @abc.abstractmethod
    def from_connection(
        cls, params: Mapping[str, str], *, node_name: str, network: Network, timeout_s: float
    ) -> LightningBackend:
        """Build from parsed connection-string parameters (see lightning/connection.py).
        Secrets named by `...filepath` parameters are read from files here."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # info
    @abc.abstractmethod
    def get_info(self) -> NodeInfo: ...

    @abc.abstractmethod
    def get_balances(self) -> Balances: ...

    # receiving
    @abc.abstractmethod
    def create_invoice(
        self,
        *,
        amount_msat: int | None,
        memo: str,
        expiry_s: int,
        label: str,
        description_hash: bytes | None = None,
    ) -> CreatedInvoice:
        """`label` is our unique tag (CLN label, Eclair externalId; LND has none, so the memo
        carries the user's UUID). With `description_hash`, the invoice commits to it instead
        of carrying `memo` (LNURL); `memo` is then the text it hashes (the LNURL metadata):
        CLN can only commit to a description it is given, and raises
        NodeRejected(reason="unsupported") when sha256(memo) != description_hash."""

    @abc.abstractmethod
    def lookup_invoice(self, *, payment_hash: str) -> InvoiceStatus:
        """Raises NodeRejected(reason="not_found") for an unknown hash."""

    @abc.abstractmethod
    def cancel_invoice(self, *, payment_hash: str) -> None:
        """Make an open invoice unpayable. Raises NodeRejected if it is already settled."""

    @abc.abstractmethod
    def stream_settled_invoices(self, *, cursor: str | None) -> Iterator[InvoiceSettlement]:
        """Every invoice settled after `cursor` (None: from the beginning), in settlement
        order, then new ones as they settle. Blocks while waiting; ends by raising
        NodeUnreachable when the connection drops (the caller reconnects from its cursor)."""

    # paying
    @abc.abstractmethod
    def decode_invoice(self, *, bolt11: str) -> DecodedInvoice: ...

    @abc.abstractmethod
    def pay_invoice(
        self,
        *,
        bolt11: str,
        max_fee_msat: int,
        timeout_s: float,
        amount_msat: int | None = None,
    ) -> PaymentResult:
        """Pay and wait up to `timeout_s` for a final result. Returns PENDING if the payment
        is still in flight when the wait ends. Raises NodeRejected when the node refused
        to start the payment (certainly not sent), OutcomeUnknown when it cannot tell."""

    @abc.abstractmethod
    def lookup_payment(self, *, payment_hash: str) -> PaymentResult: ...

    # on chain
    @abc.abstractmethod
    def new_address(self) -> str: ...

    @abc.abstractmethod
    def estimate_fee(
        self, *, outputs: Sequence[tuple[str, int]], target_conf: int
    ) -> FeeEstimate: ...

    @abc.abstractmethod
    def send_many(
        self, *, outputs: Sequence[tuple[str, int]], target_conf: int, label: str
    ) -> OnchainTransaction:
        """One transaction paying every (address, amount_sat), labelled `label` so a crash
        after broadcast can be recovered with `lookup_transaction(label=...)`."""

    @abc.abstractmethod
    def lookup_transaction(
        self, *, txid: str | None = None, label: str | None = None
    ) -> OnchainTransaction | None: ...

    @abc.abstractmethod
    def list_transactions(self, *, min_confirmations: int = 0) -> list[OnchainTransaction]:
        """The wallet's transactions (incoming and outgoing), for crediting on-chain deposits."""
