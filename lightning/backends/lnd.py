"""LND over gRPC (TLS certificate + macaroon), with LND's own service definitions.

Connection string: `type=lnd-grpc;server=host:10009;macaroonfilepath=/p/admin.macaroon;
certfilepath=/p/tls.cert` (`server` may carry `https://`; `macaroon=HEX` or `env:NAME` values
work too; without a cert the system CA roots are used).

Error mapping (see base.py for what each error promises):
- TLS handshake failure (wrong/missing cert): NodeAuthFailed(reason="tls_certificate"). The
  node's identity could not be proven, which retrying will not fix; nothing was sent.
- UNAUTHENTICATED / PERMISSION_DENIED, or LND's macaroon errors (sent as UNKNOWN):
  NodeAuthFailed(reason="macaroon").
- UNAVAILABLE "failed to connect to all addresses": the request never left us, so it is
  retried until the deadline, then NodeUnreachable (also for payments: certainly not sent).
- Other UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED / transport noise: NodeUnreachable for
  reads (and harmless writes: invoices, addresses); OutcomeUnknown for SendMany and for a
  payment LND may have accepted (pay_invoice first asks TrackPaymentV2 before giving up).
- Anything else the node answered: NodeRejected with a short reason ("not_found", ...). For
  money-moving calls only refusals we recognise count; an unrecognised answer is OutcomeUnknown.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bolt11 as bolt11_lib
import grpc

from lightning.backends import lnd_codegen
from lightning.backends.base import (
    BOLT11_PREFIX,
    Balances,
    CreatedInvoice,
    DecodedInvoice,
    FeeEstimate,
    InvoiceSettlement,
    InvoiceState,
    InvoiceStatus,
    LightningBackend,
    LightningError,
    Network,
    NodeAuthFailed,
    NodeInfo,
    NodeRejected,
    NodeUnreachable,
    OnchainOutput,
    OnchainTransaction,
    OutcomeUnknown,
    PaymentResult,
    PaymentStatus,
)
from lightning.connection import InvalidConnectionString, resolve_secret

logger = logging.getLogger(__name__)

ln, ln_grpc, router, router_grpc, invoicesrpc, invoices_grpc = lnd_codegen.load()

DEFAULT_PORT = 10009
RETRY_PAUSE_S = 0.2
LIST_PAGE = 1000
CHANNEL_OPTIONS = (
    # GetTransactions / ListInvoices answers of a busy node exceed the 4 MB default.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A silently dead connection must end the invoice stream, not hang it forever (LND
    # permits pings every 5 s or more, so 30 s is within its enforcement policy).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Come back quickly after the node restarts instead of backing off for up to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 1_000),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)

# LND network names -> ours (testnet4 shares testnet's BOLT 11 prefix).
NETWORKS = {
    "mainnet": Network.MAINNET,
    "testnet": Network.TESTNET,
    "testnet3": Network.TESTNET,
    "testnet4": Network.TESTNET,
    "signet": Network.SIGNET,
    "regtest": Network.REGTEST,
}
FAILURE_REASONS = {
    "FAILURE_REASON_TIMEOUT": "timeout",
    "FAILURE_REASON_NO_ROUTE": "no_route",
    "FAILURE_REASON_ERROR": "error",
    "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS": "incorrect_payment_details",
    "FAILURE_REASON_INSUFFICIENT_BALANCE": "insufficient_balance",
    "FAILURE_REASON_CANCELED": "canceled",
}
# LND sends most refusals as UNKNOWN with a Go error string; these are the ones we name.
REASON_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("not_found", ("unable to locate invoice", "no existing invoices", "isn't initiated")),
    ("already_paid", ("already settled", "already paid")),
    ("invoice_expired", ("invoice expired",)),
    ("insufficient_balance", ("insufficient funds", "insufficient balance", "not enough")),
    (
        "invalid_address",
        ("decoding address", "invalid address", "unknown address", "not valid for network"),
    ),
    (
        "invalid_invoice",
        ("invalid payment request", "invalid bech32", "checksum", "zpay32", "invalid invoice"),
    ),
    ("invalid_amount", ("amount must", "dust", "invalid amount")),
)
AUTH_MARKERS = ("macaroon", "verification failed", "permission denied", "signature mismatch")
TLS_MARKERS = ("handshake", "certificate_verify_failed", "ssl_error", "tsi_", "certificate")
NOT_CONNECTED_MARKERS = ("failed to connect to all addresses", "dns resolution failed")
# Status codes that mean the node looked at the request and said no.
REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
    }
)


def _status(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else ""
    return code or grpc.StatusCode.UNKNOWN, details or ""


def _has(details: str, markers: Sequence[str]) -> bool:
    lowered = details.lower()
    return any(marker in lowered for marker in markers)


def _reason(code: grpc.StatusCode, details: str) -> str | None:
    for reason, markers in REASON_MARKERS:
        if _has(details, markers):
            return reason
    if code == grpc.StatusCode.NOT_FOUND:
        return "not_found"
    return None


def _never_connected(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.UNAVAILABLE and _has(details, NOT_CONNECTED_MARKERS)


def _is_tls_failure(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.UNAVAILABLE and _has(details, TLS_MARKERS)


def network_of_bolt11(bolt11: str) -> Network | None:
    """The network a BOLT 11 string is for, from its prefix (longest prefix wins)."""
    lowered = bolt11.strip().lower()
    for network, prefix in sorted(BOLT11_PREFIX.items(), key=lambda item: -len(item[1])):
        if lowered.startswith(prefix):
            return network
    return None


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _parse_server(value: str) -> str:
    server = value.strip().rstrip("/")
    if server.lower().startswith("http://"):
        raise InvalidConnectionString("LND gRPC needs TLS: use https:// or no scheme")
    if server.lower().startswith("https://"):
        server = server[len("https://") :]
    if not server:
        raise InvalidConnectionString("server is empty")
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or host.endswith(":"):  # no port, or a bare IPv6
        server = f"{server}:{DEFAULT_PORT}"
    return server


def _read_file(path: str, *, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidConnectionString(f"cannot read {what} file {path}: {exc.strerror}") from None


def _macaroon_hex(params: Mapping[str, str]) -> str:
    if params.get("macaroon"):
        value = resolve_secret(params["macaroon"]).strip()
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            raise InvalidConnectionString("macaroon is not valid hex") from None
    if params.get("macaroonfilepath"):
        path = resolve_secret(params["macaroonfilepath"])
        return _read_file(path, what="macaroon").hex()
    raise InvalidConnectionString("LND needs macaroon=HEX or macaroonfilepath=PATH")


class LndBackend(LightningBackend):
    kind = "lnd"

    def __init__(
        self,
        *,
        node_name: str,
        network: Network,
        timeout_s: float,
        server: str,
        macaroon_hex: str,
        tls_cert: bytes | None,
    ) -> None:
        super().__init__(node_name=node_name, network=network, timeout_s=timeout_s)
        self.server = server
        self._macaroon = macaroon_hex
        self._metadata = (("macaroon", macaroon_hex),)
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_cert)
        self._channel = grpc.secure_channel(server, credentials, options=CHANNEL_OPTIONS)
        self._ln = ln_grpc.LightningStub(self._channel)
        self._router = router_grpc.RouterStub(self._channel)
        self._invoices = invoices_grpc.InvoicesStub(self._channel)

    @classmethod
    def from_connection(
        cls, params: Mapping[str, str], *, node_name: str, network: Network, timeout_s: float
    ) -> LndBackend:
        if not params.get("server"):
            raise InvalidConnectionString("LND needs server=HOST:PORT")
        cert_path = params.get("certfilepath")
        tls_cert = _read_file(resolve_secret(cert_path), what="TLS cert") if cert_path else None
        return cls(
            node_name=node_name,
            network=network,
            timeout_s=timeout_s,
            server=_parse_server(resolve_secret(params["server"])),
            macaroon_hex=_macaroon_hex(params),
            tls_cert=tls_cert,
        )

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:  # never the macaroon
        return f"<LndBackend {self.node_name} {self.server}>"

    # --- plumbing ----------------------------------------------------------------------

    def _message(self, method: str, details: str) -> str:
        text = f"LND {method} on {self.node_name}: {details[:200]}"
        return text.replace(self._macaroon, "***") if self._macaroon else text

    def _error(self, err: grpc.RpcError, method: str, *, moves_money: bool) -> LightningError:
        code, details = _status(err)
        summary = f"{code.name.lower()}: {details}" if details else code.name.lower()
        if _is_tls_failure(code, details):
            return NodeAuthFailed(
                self._message(method, "TLS handshake failed (check certfilepath and server)"),
                reason="tls_certificate",
            )
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or (
            code == grpc.StatusCode.UNKNOWN and _has(details, AUTH_MARKERS)
        ):
            return NodeAuthFailed(self._message(method, summary), reason="macaroon")
        if _never_connected(code, details):
            return NodeUnreachable(self._message(method, summary), reason="unreachable")
        reason = _reason(code, details)
        transport = code in TRANSPORT_CODES or (
            code == grpc.StatusCode.UNKNOWN and (not details or _has(details, ("stream removed",)))
        )
        if moves_money and (transport or (reason is None and code not in REFUSAL_CODES)):
            return OutcomeUnknown(self._message(method, summary), reason="outcome_unknown")
        if transport:
            return NodeUnreachable(self._message(method, summary), reason="unreachable")
        return NodeRejected(self._message(method, summary), reason=reason or code.name.lower())

    def _unary(
        self,
        method: str,
        rpc: Callable[..., Any],
        request: Any,
        *,
        moves_money: bool = False,
        retry_transport: bool = False,
    ) -> Any:
        """One call with a deadline of `timeout_s` in all. Retries while no connection could
        be made (the request never left), and for reads on any UNAVAILABLE."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                return rpc(request, timeout=max(remaining, 0.01), metadata=self._metadata)
            except grpc.RpcError as err:
                code, details = _status(err)
                retryable = _never_connected(code, details) or (
                    retry_transport and code == grpc.StatusCode.UNAVAILABLE
                )
                if (
                    retryable
                    and not _is_tls_failure(code, details)
                    and deadline - time.monotonic() > RETRY_PAUSE_S
                ):
                    time.sleep(RETRY_PAUSE_S)
                    continue
                raise self._error(err, method, moves_money=moves_money) from None

    def _read(self, method: str, rpc: Callable[..., Any], request: Any) -> Any:
        return self._unary(method, rpc, request, retry_transport=True)

    # --- info --------------------------------------------------------------------------

    def get_info(self) -> NodeInfo:
        info = self._read("GetInfo", self._ln.GetInfo, ln.GetInfoRequest())
        names = [chain.network for chain in info.chains if chain.chain in ("bitcoin", "")]
        name = names[0] if names else ("testnet" if info.testnet else "mainnet")
        if name not in NETWORKS:
            raise LightningError(
                self._message("GetInfo", f"unsupported network {name!r}"),
                reason="unsupported_network",
            )
        return NodeInfo(
            alias=info.alias,
            pubkey=info.identity_pubkey,
            network=NETWORKS[name],
            block_height=info.block_height,
            synced_to_chain=info.synced_to_chain,
            version=info.version,
        )

    def get_balances(self) -> Balances:
        channels = self._read("ChannelBalance", self._ln.ChannelBalance, ln.ChannelBalanceRequest())
        wallet = self._read("WalletBalance", self._ln.WalletBalance, ln.WalletBalanceRequest())
        return Balances(
            channel_local_msat=channels.local_balance.msat,
            channel_remote_msat=channels.remote_balance.msat,
            onchain_confirmed_sat=wallet.confirmed_balance,
            onchain_unconfirmed_sat=wallet.unconfirmed_balance,
        )

    # --- receiving ---------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        amount_msat: int | None,
        memo: str,
        expiry_s: int,
        label: str,
        description_hash: bytes | None = None,
    ) -> CreatedInvoice:
        # LND has no label: callers put their unique tag in the memo (see base.py). With a
        # description hash LND signs `h` instead of `d`, and still stores the memo.
        request = ln.Invoice(memo=memo, value_msat=amount_msat or 0, expiry=expiry_s)
        if description_hash is not None:
            request.description_hash = description_hash
        created = self._unary("AddInvoice", self._ln.AddInvoice, request)
        return CreatedInvoice(
            payment_hash=created.r_hash.hex(),
            bolt11=created.payment_request,
            amount_msat=amount_msat or None,
            expires_at=self._expiry_of(created.payment_request, fallback_s=expiry_s),
        )

    @staticmethod
    def _expiry_of(payment_request: str, *, fallback_s: int) -> datetime:
        # The signed timestamp is the truth; decoding locally saves a DecodePayReq round trip.
        try:
            decoded = bolt11_lib.decode(payment_request)
            return _utc(decoded.date + decoded.expiry)
        except Exception:
            return datetime.now(UTC) + timedelta(seconds=fallback_s)

    @staticmethod
    def _invoice_status(invoice: Any) -> InvoiceStatus:
        states = ln.Invoice.InvoiceState
        if invoice.state == states.Value("SETTLED"):
            state = InvoiceState.SETTLED
        elif invoice.state == states.Value("CANCELED"):
            state = InvoiceState.CANCELED
        else:  # OPEN, or ACCEPTED (HTLCs held, not settled yet)
            state = InvoiceState.OPEN
        settled = state == InvoiceState.SETTLED
        return InvoiceStatus(
            payment_hash=invoice.r_hash.hex(),
            state=state,
            amount_msat=invoice.value_msat or None,
            amount_received_msat=invoice.amt_paid_msat,
            preimage=invoice.r_preimage.hex() if settled and invoice.r_preimage else None,
            settled_at=_utc(invoice.settle_date) if settled and invoice.settle_date else None,
            label=invoice.memo,
        )

    @staticmethod
    def _hash_bytes(payment_hash: str) -> bytes:
        try:
            raw = bytes.fromhex(payment_hash)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise NodeRejected("payment hash must be 32 bytes of hex", reason="invalid_hash")
        return raw

    def lookup_invoice(self, *, payment_hash: str) -> InvoiceStatus:
        request = ln.PaymentHash(r_hash=self._hash_bytes(payment_hash))
        return self._invoice_status(self._read("LookupInvoice", self._ln.LookupInvoice, request))

    def cancel_invoice(self, *, payment_hash: str) -> None:
        request = invoicesrpc.CancelInvoiceMsg(payment_hash=self._hash_bytes(payment_hash))
        self._unary("CancelInvoice", self._invoices.CancelInvoice, request)

    def _settled_since(
        self, after: int, *, until: int | None = None
    ) -> list[tuple[int, InvoiceStatus]]:
        """Settled invoices with after < settle_index (<= until), in settlement order, from
        ListInvoices: LND's subscription only replays from a non-zero settle_index."""
        found: list[tuple[int, Any]] = []
        offset = 0
        while True:
            page = self._read(
                "ListInvoices",
                self._ln.ListInvoices,
                ln.ListInvoiceRequest(index_offset=offset, num_max_invoices=LIST_PAGE),
            )
            for invoice in page.invoices:
                index = invoice.settle_index
                settled = invoice.state == ln.Invoice.InvoiceState.Value("SETTLED")
                if settled and index > after and (until is None or index <= until):
                    found.append((index, invoice))
            if len(page.invoices) < LIST_PAGE or page.last_index_offset <= offset:
                break
            offset = page.last_index_offset
        found.sort(key=lambda pair: pair[0])
        return [(index, self._invoice_status(invoice)) for index, invoice in found]

    def stream_settled_invoices(self, *, cursor: str | None) -> Iterator[InvoiceSettlement]:
        # The cursor is LND's settle_index. Settle indexes are consecutive, so a jump in the
        # live stream (a settlement that raced our subscribing) is filled from ListInvoices.
        try:
            last = int(cursor) if cursor else 0
        except ValueError:
            raise ValueError(f"not an LND settle_index cursor: {cursor!r}") from None
        if last == 0:
            for index, status in self._settled_since(0):
                last = index
                yield InvoiceSettlement(invoice=status, cursor=str(index))
        call = self._ln.SubscribeInvoices(
            ln.InvoiceSubscription(settle_index=last), metadata=self._metadata
        )
        try:
            for invoice in call:
                index = invoice.settle_index
                if invoice.state != ln.Invoice.InvoiceState.Value("SETTLED") or index <= last:
                    continue  # additions, cancellations, replays we already handed out
                if index > last + 1:
                    for missed_index, missed in self._settled_since(last, until=index - 1):
                        last = missed_index
                        yield InvoiceSettlement(invoice=missed, cursor=str(missed_index))
                last = index
                yield InvoiceSettlement(invoice=self._invoice_status(invoice), cursor=str(index))
        except grpc.RpcError as err:
            error = self._error(err, "SubscribeInvoices", moves_money=False)
            if isinstance(error, NodeRejected) and _status(err)[0] == grpc.StatusCode.UNKNOWN:
                raise NodeUnreachable(error.message, reason="unreachable") from None
            raise error from None
        finally:
            call.cancel()
        raise NodeUnreachable(self._message("SubscribeInvoices", "stream ended"))

    # --- paying ------------------------------------------------------------------------

    def decode_invoice(self, *, bolt11: str) -> DecodedInvoice:
        network = network_of_bolt11(bolt11)
        if network != self.network:
            raise NodeRejected(
                f"invoice is for {network or 'an unknown network'}, node is on {self.network}",
                reason="invalid_invoice",
            )
        decoded = self._read("DecodePayReq", self._ln.DecodePayReq, ln.PayReqString(pay_req=bolt11))
        return DecodedInvoice(
            payment_hash=decoded.payment_hash,
            amount_msat=decoded.num_msat or None,
            description=decoded.description,
            description_hash=decoded.description_hash or None,
            payee=decoded.destination,
            created_at=_utc(decoded.timestamp),
            expires_at=_utc(decoded.timestamp + decoded.expiry),
            network=network,
            min_final_cltv_expiry=decoded.cltv_expiry,
        )

    @staticmethod
    def _payment_result(payment: Any, payment_hash: str) -> PaymentResult:
        statuses = ln.Payment.PaymentStatus
        if payment.status == statuses.Value("SUCCEEDED"):
            status = PaymentStatus.SUCCEEDED
        elif payment.status == statuses.Value("FAILED"):
            status = PaymentStatus.FAILED
        else:  # IN_FLIGHT, INITIATED, UNKNOWN: never failed unless LND says FAILED
            status = PaymentStatus.PENDING
        reason = ""
        if status == PaymentStatus.FAILED:
            name = ln.PaymentFailureReason.Name(payment.failure_reason)
            reason = FAILURE_REASONS.get(name, name.lower())
        preimage = payment.payment_preimage
        succeeded = status == PaymentStatus.SUCCEEDED
        return PaymentResult(
            payment_hash=payment.payment_hash or payment_hash,
            status=status,
            amount_msat=payment.value_msat or None,
            fee_msat=payment.fee_msat if succeeded or payment.fee_msat else None,
            preimage=preimage if succeeded and preimage.strip("0") else None,
            failure_reason=reason,
        )

    def pay_invoice(
        self,
        *,
        bolt11: str,
        max_fee_msat: int,
        timeout_s: float,
        amount_msat: int | None = None,
    ) -> PaymentResult:
        # Decoding first gives the hash for lookups and fails early (nothing sent) on the
        # wrong network, a bad invoice or an unreachable node.
        payment_hash = self.decode_invoice(bolt11=bolt11).payment_hash
        request = router.SendPaymentRequest(
            payment_request=bolt11,
            fee_limit_msat=max_fee_msat,
            timeout_seconds=max(1, math.ceil(timeout_s)),
            no_inflight_updates=False,  # the first update is LND's proof it took the payment
        )
        if amount_msat is not None:
            request.amt_msat = amount_msat
        deadline = time.monotonic() + timeout_s
        while True:
            last: PaymentResult | None = None
            call = self._router.SendPaymentV2(
                request, timeout=max(deadline - time.monotonic(), 0.01), metadata=self._metadata
            )
            try:
                for update in call:
                    last = self._payment_result(update, payment_hash)
                    if last.status != PaymentStatus.PENDING:
                        return last
            except grpc.RpcError as err:
                if last is not None:  # accepted, then our wait ended or the line dropped
                    return last
                code, details = _status(err)
                if _never_connected(code, details) and not _is_tls_failure(code, details):
                    if deadline - time.monotonic() > RETRY_PAUSE_S:
                        time.sleep(RETRY_PAUSE_S)
                        continue
                    raise self._error(err, "SendPaymentV2", moves_money=False) from None
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    return self._existing_payment(payment_hash, err)
                error = self._error(err, "SendPaymentV2", moves_money=True)
                if isinstance(error, OutcomeUnknown):
                    return self._resolve_unknown(payment_hash, error)
                raise error from None
            finally:
                call.cancel()
            if last is not None:  # stream closed cleanly before a final state
                return last
            return self._resolve_unknown(
                payment_hash,
                OutcomeUnknown(self._message("SendPaymentV2", "stream ended without a state")),
            )

    def _existing_payment(self, payment_hash: str, err: grpc.RpcError) -> PaymentResult:
        # LND refuses a second payment of a hash it paid or is paying: report that one.
        existing = self.lookup_payment(payment_hash=payment_hash)
        if existing.status == PaymentStatus.NOT_FOUND:
            raise self._error(err, "SendPaymentV2", moves_money=False) from None
        return existing

    def _resolve_unknown(self, payment_hash: str, error: OutcomeUnknown) -> PaymentResult:
        """The request may have reached LND: ask it; without a clear answer, stay unknown."""
        try:
            found = self.lookup_payment(payment_hash=payment_hash)
        except LightningError:
            raise error from None
        if found.status == PaymentStatus.NOT_FOUND:
            raise error
        return found

    def lookup_payment(self, *, payment_hash: str) -> PaymentResult:
        request = router.TrackPaymentRequest(
            payment_hash=self._hash_bytes(payment_hash), no_inflight_updates=False
        )
        deadline = time.monotonic() + self.timeout_s
        while True:
            call = self._router.TrackPaymentV2(
                request, timeout=max(deadline - time.monotonic(), 0.01), metadata=self._metadata
            )
            try:
                # The first update is the current state; later ones we do not wait for.
                for update in call:
                    return self._payment_result(update, payment_hash)
            except grpc.RpcError as err:
                code, details = _status(err)
                if code == grpc.StatusCode.NOT_FOUND or _reason(code, details) == "not_found":
                    return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.NOT_FOUND)
                if (
                    code == grpc.StatusCode.UNAVAILABLE
                    and not _is_tls_failure(code, details)
                    and deadline - time.monotonic() > RETRY_PAUSE_S
                ):
                    time.sleep(RETRY_PAUSE_S)
                    continue
                raise self._error(err, "TrackPaymentV2", moves_money=False) from None
            finally:
                call.cancel()
            raise NodeUnreachable(self._message("TrackPaymentV2", "stream ended without a state"))

    # --- on chain ----------------------------------------------------------------------

    def new_address(self) -> str:
        request = ln.NewAddressRequest(type=ln.AddressType.Value("WITNESS_PUBKEY_HASH"))
        return self._unary("NewAddress", self._ln.NewAddress, request).address

    @staticmethod
    def _address_map(outputs: Sequence[tuple[str, int]]) -> dict[str, int]:
        amounts = dict(outputs)
        if len(amounts) != len(outputs):
            # LND takes a map: a repeated address would silently merge into one output.
            raise NodeRejected(
                "the same address twice in one transaction", reason="invalid_address"
            )
        return amounts

    def estimate_fee(self, *, outputs: Sequence[tuple[str, int]], target_conf: int) -> FeeEstimate:
        request = ln.EstimateFeeRequest(AddrToAmount=self._address_map(outputs))
        request.target_conf = target_conf
        estimate = self._read("EstimateFee", self._ln.EstimateFee, request)
        return FeeEstimate(
            fee_sat=estimate.fee_sat,
            sat_per_vbyte=estimate.sat_per_vbyte or estimate.feerate_sat_per_byte,
        )

    def send_many(
        self, *, outputs: Sequence[tuple[str, int]], target_conf: int, label: str
    ) -> OnchainTransaction:
        request = ln.SendManyRequest(AddrToAmount=self._address_map(outputs), label=label)
        request.target_conf = target_conf
        txid = self._unary("SendMany", self._ln.SendMany, request, moves_money=True).txid
        # Broadcast: from here on nothing may raise, the details are best effort.
        try:
            found = self.lookup_transaction(txid=txid)
        except LightningError:
            found = None
        if found is not None:
            return found
        return OnchainTransaction(
            txid=txid,
            confirmations=0,
            fee_sat=None,
            label=label,
            outputs=tuple(OnchainOutput(address=a, amount_sat=v) for a, v in outputs),
        )

    @staticmethod
    def _transaction(tx: Any) -> OnchainTransaction:
        return OnchainTransaction(
            txid=tx.tx_hash,
            confirmations=tx.num_confirmations,
            fee_sat=tx.total_fees if tx.amount < 0 else None,  # fees are ours on our sends
            label=tx.label,
            outputs=tuple(
                OnchainOutput(address=o.address, amount_sat=o.amount, ours=o.is_our_address)
                for o in tx.output_details
            ),
            block_height=tx.block_height or None,
        )

    def _transactions(self) -> list[Any]:
        # end_height=-1 includes unconfirmed transactions.
        request = ln.GetTransactionsRequest(start_height=0, end_height=-1)
        return list(self._read("GetTransactions", self._ln.GetTransactions, request).transactions)

    def lookup_transaction(
        self, *, txid: str | None = None, label: str | None = None
    ) -> OnchainTransaction | None:
        if txid is None and label is None:
            raise ValueError("give txid or label")
        for tx in self._transactions():
            if (txid is None or tx.tx_hash == txid) and (label is None or tx.label == label):
                return self._transaction(tx)
        return None

    def list_transactions(self, *, min_confirmations: int = 0) -> list[OnchainTransaction]:
        return [
            self._transaction(tx)
            for tx in self._transactions()
            if tx.num_confirmations >= min_confirmations
        ]
