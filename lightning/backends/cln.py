"""Core Lightning backend: JSON-RPC 2.0 on the node's `lightning-rpc` unix socket (pyln-client).

Connection string: `type=clightning;server=unix:///home/cln/.lightning/regtest/lightning-rpc`,
optionally `addresstype=p2tr` (default `bech32`), and `rune=` / `runefilepath=` (kept for a
future commando/REST transport; the unix socket is authenticated by file permissions).

Design notes (see also the methods):

- Timeouts: pyln-client has none, so `_SocketRpc` sets one on every connection it opens before
  the request is written. Whether the request was written decides NodeUnreachable (certainly
  not received) versus OutcomeUnknown (a state-changing call that may have run).
- Bookkeeping CLN lacks lives in CLN's own `datastore` (in the node's database, so it survives
  our crashes and is shared by every process talking to the node), under `satledger/...`:
  `sendmany/<label>` (CLN transactions have no label), `canceled/<payment_hash>` (CLN can only
  *delete* an unpaid invoice) and `payfailed/<payment_hash>` (CLN keeps no record of a payment
  that failed before any attempt was sent).
- Description hashes: CLN never signs an invoice for a bare hash; `invoice deschashonly=true`
  commits to sha256(description). So `memo` must be the text whose SHA-256 is
  `description_hash` (the LNURL metadata); anything else is NodeRejected("unsupported").
- Paying uses `pay` (present in every supported CLN; with `xpay-handle-pay` set, CLN routes it
  through xpay and keeps pay's result shape), `maxfee` as the absolute fee cap and
  `retry_for` as the attempt window. Its outcome is confirmed with `listpays`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embit.networks import NETWORKS
from embit.script import Script
from pyln.client import LightningRpc, RpcError

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

_rpc_log = logging.getLogger("lightning.backends.cln.rpc")


class _MethodOnlyLog:
    """pyln-client logs whole payloads and replies at DEBUG (preimages, invoices); this logs
    the method name only."""

    def debug(self, message: str, method: str, *_: Any) -> None:
        _rpc_log.debug("%s %s", "reply" if message.startswith("Received") else "call", method)


_CLN_NETWORK = {
    "bitcoin": Network.MAINNET,
    "testnet": Network.TESTNET,
    "testnet4": Network.TESTNET,
    "signet": Network.SIGNET,
    "regtest": Network.REGTEST,
}
_EMBIT_NETWORK = {
    Network.MAINNET: NETWORKS["main"],
    Network.TESTNET: NETWORKS["test"],
    Network.SIGNET: NETWORKS["signet"],
    Network.REGTEST: NETWORKS["regtest"],
}

# CLN error codes (common/jsonrpc_errors.h).
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
LIGHTNINGD_SHUTDOWN = -5
PAY_IN_PROGRESS = 200
PAY_RHASH_ALREADY_USED = 201
PAY_DESTINATION_PERM_FAIL = 203
PAY_ROUTE_NOT_FOUND = 205
PAY_ROUTE_TOO_EXPENSIVE = 206
PAY_INVOICE_EXPIRED = 207
PAY_STOPPED_RETRYING = 210
FUND_CANNOT_AFFORD = 301
FUND_OUTPUT_IS_DUST = 302
INVOICE_LABEL_ALREADY_EXISTS = 900
INVOICE_WAIT_TIMED_OUT = 904
INVOICE_NOT_FOUND = 905
INVOICE_STATUS_UNEXPECTED = 906
DATASTORE_DEL_DOES_NOT_EXIST = 1200

# `pay` errors after which CLN has given up for good: nothing is or will be in flight.
_PAY_FINAL_FAILURES = {
    PAY_DESTINATION_PERM_FAIL: "destination_rejected",
    PAY_ROUTE_NOT_FOUND: "no_route",
    PAY_ROUTE_TOO_EXPENSIVE: "fee_limit_exceeded",
    PAY_INVOICE_EXPIRED: "invoice_expired",
    PAY_STOPPED_RETRYING: "timeout",
}
_DEFAULT_REASONS = {
    INVALID_PARAMS: "invalid_params",
    METHOD_NOT_FOUND: "unsupported",
    FUND_CANNOT_AFFORD: "insufficient_balance",
    FUND_OUTPUT_IS_DUST: "dust_output",
    INVOICE_LABEL_ALREADY_EXISTS: "duplicate_label",
    INVOICE_NOT_FOUND: "not_found",
    INVOICE_STATUS_UNEXPECTED: "unexpected_status",
    PAY_INVOICE_EXPIRED: "invoice_expired",
    PAY_RHASH_ALREADY_USED: "already_paid",
}

_DS_ROOT = "satledger"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# A transport failure after the request may have run: this long to confirm via listpays.
_WAIT_POLL_S = 30


class ClnRpcError(NodeRejected):
    """A JSON-RPC error response: CLN understood the request and refused it."""

    def __init__(self, message: str, *, reason: str, cln_code: int, data: Any = None) -> None:
        super().__init__(message, reason=reason)
        self.cln_code = cln_code
        self.data = data


class _SocketRpc(LightningRpc):
    """pyln-client's client with a socket timeout.

    pyln-client opens one connection per call and has no timeout of its own; `_writeobj` is
    the one hook that sees each connected socket, right before the request goes out. Connect
    itself is left to the kernel: on a unix socket it fails at once when the node is down."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(socket_path, logger=_MethodOnlyLog())
        self.read_timeout_s = 30.0
        self.request_sent = False
        self._open: Any = None

    def _writeobj(self, sock: Any, obj: Any) -> None:
        self._open = sock
        sock.sock.settimeout(self.read_timeout_s)
        super()._writeobj(sock, obj)
        # Only a fully written request can be parsed and run by lightningd.
        self.request_sent = True

    def timed_call(self, method: str, payload: dict[str, Any], *, timeout_s: float) -> Any:
        self.read_timeout_s = timeout_s
        self.request_sent = False
        try:
            return self.call(method, payload)
        finally:
            # pyln-client leaves the socket open when a call raises; close it now so the node
            # sees us go (and a long waitanyinvoice is not kept around).
            if self._open is not None:
                self._open.close()
                self._open = None


def _msat(value: Any) -> int:
    """CLN returns msat as integers; very old nodes used "123msat" strings."""
    if value is None:
        return 0
    if isinstance(value, str):
        return int(value.removesuffix("msat"))
    return int(value)


def _ts(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), tz=UTC)


def _network_of(bolt11: str) -> Network | None:
    """The network a BOLT 11 string is for, from its human-readable part."""
    text = bolt11.strip().lower().removeprefix("lightning:")
    hrp = text[: text.rfind("1")] if "1" in text else ""
    currency = re.sub(r"\d+[munp]?$", "", hrp)
    for network, prefix in BOLT11_PREFIX.items():
        if currency == prefix:
            return network
    return None


def _canonical(address: str) -> str:
    """Bech32 addresses compare case-insensitively; base58 ones exactly."""
    lowered = address.lower()
    return lowered if lowered.startswith(("bc1", "tb1", "bcrt1")) else address


class ClnBackend(LightningBackend):
    kind = "cln"

    def __init__(
        self,
        *,
        node_name: str,
        network: Network,
        timeout_s: float,
        socket_path: str,
        address_type: str = "bech32",
        rune: str | None = None,
        wait_poll_s: int = _WAIT_POLL_S,
    ) -> None:
        super().__init__(node_name=node_name, network=network, timeout_s=timeout_s)
        self.socket_path = socket_path
        self.address_type = address_type
        self.wait_poll_s = wait_poll_s
        self._rune = rune  # unused on the unix socket; never printed
        self._rpc = _SocketRpc(socket_path)

    def __repr__(self) -> str:
        return f"<ClnBackend {self.node_name} {self.socket_path}>"

    @classmethod
    def from_connection(
        cls, params: Mapping[str, str], *, node_name: str, network: Network, timeout_s: float
    ) -> ClnBackend:
        server = params.get("server", "")
        if not server:
            raise InvalidConnectionString("clightning needs server=unix:///path/to/lightning-rpc")
        if server.startswith("unix://"):
            path = server.removeprefix("unix://")
        elif "://" in server:
            raise InvalidConnectionString(
                "clightning: only the lightning-rpc unix socket (server=unix://...) is supported"
            )
        else:
            path = server
        address_type = params.get("addresstype", "bech32").lower()
        if address_type not in ("bech32", "p2tr"):
            raise InvalidConnectionString("clightning: addresstype must be bech32 or p2tr")
        rune = None
        if "rune" in params:
            rune = resolve_secret(params["rune"])
        elif "runefilepath" in params:
            try:
                rune = Path(params["runefilepath"]).read_text().strip()
            except OSError as exc:
                raise InvalidConnectionString(
                    f"clightning: cannot read runefilepath ({exc.strerror})"
                ) from None
        return cls(
            node_name=node_name,
            network=network,
            timeout_s=timeout_s,
            socket_path=path,
            address_type=address_type,
            rune=rune,
        )

    # --- transport ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        mutating: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """One RPC call. `mutating`: a lost reply means OutcomeUnknown, not NodeUnreachable."""
        payload = {k: v for k, v in (params or {}).items() if v is not None}
        where = f"{self.node_name}: CLN {method}"
        try:
            return self._rpc.timed_call(method, payload, timeout_s=timeout_s or self.timeout_s)
        except RpcError as exc:
            error = exc.error
            if not isinstance(error, dict):
                # pyln-client's way of saying the connection closed before the reply.
                raise self._lost(where, "connection lost", mutating) from None
            code = int(error.get("code", -1))
            message = str(error.get("message", ""))[:200]
            if code == LIGHTNINGD_SHUTDOWN:
                raise NodeUnreachable(f"{where}: node is shutting down") from None
            raise ClnRpcError(
                f"{where} failed ({code}): {message}",
                reason=_DEFAULT_REASONS.get(code, "rejected"),
                cln_code=code,
                data=error.get("data"),
            ) from None
        except (TimeoutError, OSError, ValueError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            if not self._rpc.request_sent:
                raise NodeUnreachable(f"{where}: cannot reach lightning-rpc ({what})") from None
            raise self._lost(where, what, mutating) from None

    @staticmethod
    def _lost(where: str, what: str, mutating: bool) -> Exception:
        if mutating:
            return OutcomeUnknown(f"{where}: {what} after the request was sent")
        return NodeUnreachable(f"{where}: {what}")

    # --- datastore (our bookkeeping inside the node) -------------------------------------

    def _ds_get(self, *key: str) -> dict[str, Any] | None:
        found = self._call("listdatastore", {"key": [_DS_ROOT, *key]})["datastore"]
        for entry in found:
            if entry.get("key") == [_DS_ROOT, *key] and "string" in entry:
                return json.loads(entry["string"])
        return None

    def _ds_children(self, *key: str) -> dict[str, dict[str, Any]]:
        found = self._call("listdatastore", {"key": [_DS_ROOT, *key]})["datastore"]
        return {
            entry["key"][-1]: json.loads(entry["string"]) for entry in found if "string" in entry
        }

    def _ds_put(self, value: dict[str, Any], *key: str) -> None:
        self._call(
            "datastore",
            {"key": [_DS_ROOT, *key], "string": json.dumps(value), "mode": "create-or-replace"},
            mutating=True,
        )

    def _ds_delete(self, *key: str) -> None:
        try:
            self._call("deldatastore", {"key": [_DS_ROOT, *key]}, mutating=True)
        except ClnRpcError as exc:
            if exc.cln_code != DATASTORE_DEL_DOES_NOT_EXIST:
                raise

    # --- info ----------------------------------------------------------------------------

    def get_info(self) -> NodeInfo:
        info = self._call("getinfo")
        network = _CLN_NETWORK.get(info.get("network", ""))
        if network is None:
            raise NodeRejected(f"{self.node_name}: unknown CLN network", reason="unsupported")
        return NodeInfo(
            alias=info.get("alias", ""),
            pubkey=info["id"],
            network=network,
            block_height=int(info.get("blockheight", 0)),
            synced_to_chain=not (
                info.get("warning_bitcoind_sync") or info.get("warning_lightningd_sync")
            ),
            version=info.get("version", ""),
        )

    def get_balances(self) -> Balances:
        funds = self._call("listfunds")
        local = remote = 0
        for channel in funds.get("channels", []):
            # Only a normal channel can carry payments either way.
            if channel.get("state") != "CHANNELD_NORMAL":
                continue
            ours = _msat(channel.get("our_amount_msat"))
            local += ours
            remote += max(0, _msat(channel.get("amount_msat")) - ours)
        confirmed = unconfirmed = 0
        for output in funds.get("outputs", []):
            amount = _msat(output.get("amount_msat")) // 1000
            if output.get("status") == "confirmed":
                confirmed += amount
            elif output.get("status") in ("unconfirmed", "immature"):
                unconfirmed += amount
        return Balances(
            channel_local_msat=local,
            channel_remote_msat=remote,
            onchain_confirmed_sat=confirmed,
            onchain_unconfirmed_sat=unconfirmed,
        )

    # --- receiving -----------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        amount_msat: int | None,
        memo: str,
        expiry_s: int,
        label: str,
        description_hash: bytes | None = None,
    ) -> CreatedInvoice:
        params: dict[str, Any] = {
            "amount_msat": "any" if amount_msat is None else int(amount_msat),
            "label": label,
            "description": memo,
            "expiry": int(expiry_s),
        }
        if description_hash is not None:
            # CLN only hashes a description it is given (deschashonly); it cannot sign a hash
            # whose text it does not know.
            if hashlib.sha256(memo.encode()).digest() != description_hash:
                raise NodeRejected(
                    f"{self.node_name}: CLN needs the text behind description_hash as memo",
                    reason="unsupported",
                )
            params["deschashonly"] = True
        try:
            created = self._call("invoice", params, mutating=True)
        except ClnRpcError as exc:
            if exc.cln_code != INVOICE_LABEL_ALREADY_EXISTS:
                raise
            # A retry after a lost reply: the same request under the same label is a success.
            existing = self._find_invoice(label=label)
            if (
                existing is None
                or existing.get("description", "") != memo
                or existing.get("amount_msat") != amount_msat
            ):
                raise
            created = existing
        return CreatedInvoice(
            payment_hash=created["payment_hash"],
            bolt11=created["bolt11"],
            amount_msat=amount_msat,
            expires_at=_ts(created["expires_at"]),
        )

    def _find_invoice(
        self, *, payment_hash: str | None = None, label: str | None = None
    ) -> dict[str, Any] | None:
        if payment_hash is not None and not _HEX64.match(payment_hash):
            raise NodeRejected(f"{self.node_name}: malformed payment hash", reason="not_found")
        found = self._call("listinvoices", {"payment_hash": payment_hash, "label": label})
        invoices = found.get("invoices", [])
        return invoices[0] if invoices else None

    @staticmethod
    def _invoice_status(entry: Mapping[str, Any]) -> InvoiceStatus:
        state = {"paid": InvoiceState.SETTLED, "unpaid": InvoiceState.OPEN}.get(
            entry.get("status", ""), InvoiceState.CANCELED
        )
        amount = entry.get("amount_msat")
        return InvoiceStatus(
            payment_hash=entry["payment_hash"],
            state=state,
            amount_msat=None if amount is None else _msat(amount),
            amount_received_msat=_msat(entry.get("amount_received_msat")),
            preimage=entry.get("payment_preimage"),
            settled_at=_ts(entry["paid_at"]) if entry.get("paid_at") else None,
            label=str(entry.get("label", "")),
        )

    def lookup_invoice(self, *, payment_hash: str) -> InvoiceStatus:
        entry = self._find_invoice(payment_hash=payment_hash)
        if entry is not None:
            return self._invoice_status(entry)
        canceled = self._ds_get("canceled", payment_hash)
        if canceled is not None:
            return InvoiceStatus(
                payment_hash=payment_hash,
                state=InvoiceState.CANCELED,
                amount_msat=canceled.get("amount_msat"),
                amount_received_msat=0,
                preimage=None,
                settled_at=None,
                label=canceled.get("label", ""),
            )
        raise NodeRejected(f"{self.node_name}: no invoice with that hash", reason="not_found")

    def cancel_invoice(self, *, payment_hash: str) -> None:
        entry = self._find_invoice(payment_hash=payment_hash)
        if entry is None:
            if self._ds_get("canceled", payment_hash) is not None:
                return
            raise NodeRejected(f"{self.node_name}: no invoice with that hash", reason="not_found")
        if entry["status"] == "paid":
            raise NodeRejected(f"{self.node_name}: invoice already paid", reason="already_paid")
        if entry["status"] == "expired":
            return  # already unpayable, and it stays listed as such
        # The tombstone goes first: lookup must never find "not_found" for a cancelled invoice.
        tombstone = {"label": entry["label"], "amount_msat": entry.get("amount_msat")}
        self._ds_put(tombstone, "canceled", payment_hash)
        try:
            self._call("delinvoice", {"label": entry["label"], "status": "unpaid"}, mutating=True)
        except ClnRpcError as exc:
            if exc.cln_code == INVOICE_NOT_FOUND:
                return
            current = (exc.data or {}).get("current_status") if exc.cln_code == 906 else None
            if current == "expired":
                return
            self._ds_delete("canceled", payment_hash)
            if current == "paid":
                raise NodeRejected(
                    f"{self.node_name}: invoice already paid", reason="already_paid"
                ) from None
            raise

    def stream_settled_invoices(self, *, cursor: str | None) -> Iterator[InvoiceSettlement]:
        # The cursor is CLN's pay_index: dense, increasing, in settlement order.
        last = int(cursor) if cursor else 0
        while True:
            try:
                entry = self._call(
                    "waitanyinvoice",
                    {"lastpay_index": last, "timeout": self.wait_poll_s},
                    timeout_s=self.wait_poll_s + self.timeout_s,
                )
            except ClnRpcError as exc:
                if exc.cln_code == INVOICE_WAIT_TIMED_OUT:
                    continue
                raise
            except OutcomeUnknown as exc:  # pragma: no cover - waitanyinvoice is not mutating
                raise NodeUnreachable(str(exc)) from None
            if entry.get("status") != "paid" or "pay_index" not in entry:
                continue
            last = int(entry["pay_index"])
            yield InvoiceSettlement(invoice=self._invoice_status(entry), cursor=str(last))

    # --- paying --------------------------------------------------------------------------

    def _check_network(self, bolt11: str) -> None:
        if _network_of(bolt11) != self.network:
            raise NodeRejected(
                f"{self.node_name}: not a {self.network} BOLT 11 invoice", reason="invalid_invoice"
            )

    def decode_invoice(self, *, bolt11: str) -> DecodedInvoice:
        self._check_network(bolt11)
        try:
            decoded = self._call("decode", {"string": bolt11.strip()})
        except ClnRpcError as exc:
            if exc.cln_code == INVALID_PARAMS:
                raise NodeRejected(exc.message, reason="invalid_invoice") from None
            raise
        if decoded.get("type") != "bolt11 invoice" or not decoded.get("valid", False):
            raise NodeRejected(
                f"{self.node_name}: invalid BOLT 11 invoice", reason="invalid_invoice"
            )
        amount = decoded.get("amount_msat")
        created = int(decoded["created_at"])
        return DecodedInvoice(
            payment_hash=decoded["payment_hash"],
            amount_msat=None if amount is None else _msat(amount),
            description=decoded.get("description", ""),
            description_hash=decoded.get("description_hash"),
            payee=decoded["payee"],
            created_at=_ts(created),
            expires_at=_ts(created + int(decoded.get("expiry", 3600))),
            network=self.network,
            min_final_cltv_expiry=int(decoded.get("min_final_cltv_expiry", 18)),
        )

    def pay_invoice(
        self,
        *,
        bolt11: str,
        max_fee_msat: int,
        timeout_s: float,
        amount_msat: int | None = None,
    ) -> PaymentResult:
        self._check_network(bolt11)
        decoded = self.decode_invoice(bolt11=bolt11)
        payment_hash = decoded.payment_hash
        params = {
            "bolt11": bolt11.strip(),
            "amount_msat": amount_msat,
            "maxfee": int(max_fee_msat),
            # CLN stops starting new attempts after retry_for (whole seconds), leaving a
            # moment to report a final failure; parts still in flight outlast it, and our
            # wait (the socket timeout) ends at timeout_s either way.
            "retry_for": max(1, math.floor(timeout_s) - 1),
        }
        try:
            paid = self._call("pay", params, mutating=True, timeout_s=timeout_s)
        except ClnRpcError as exc:
            return self._pay_error(exc, payment_hash)
        except OutcomeUnknown:
            # Our wait ended (or the reply was lost); the node knows what happened.
            return self._confirm_unknown_payment(payment_hash)
        status = paid.get("status")
        if status == "complete":
            amount = _msat(paid.get("amount_msat"))
            return PaymentResult(
                payment_hash=payment_hash,
                status=PaymentStatus.SUCCEEDED,
                amount_msat=amount,
                fee_msat=_msat(paid.get("amount_sent_msat")) - amount,
                preimage=paid.get("payment_preimage"),
            )
        return self._confirm_unknown_payment(payment_hash)

    def _pay_error(self, exc: ClnRpcError, payment_hash: str) -> PaymentResult:
        reason = _PAY_FINAL_FAILURES.get(exc.cln_code)
        if reason is not None:
            # CLN has given up: record why, since a failure before any attempt leaves no
            # trace in listpays and lookup_payment must agree with this answer.
            with contextlib.suppress(LightningError):
                self._ds_put({"reason": reason}, "payfailed", payment_hash)
            return PaymentResult(
                payment_hash=payment_hash, status=PaymentStatus.FAILED, failure_reason=reason
            )
        if exc.cln_code in (INVALID_PARAMS, PAY_RHASH_ALREADY_USED):
            reason = "already_paid" if exc.cln_code == PAY_RHASH_ALREADY_USED else "invalid_invoice"
            raise NodeRejected(exc.message, reason=reason) from None
        # Anything else (catch-all -1, a crashed pay plugin, payment in progress): ask the node.
        found = self._confirm_unknown_payment(payment_hash, missing_means_rejected=True)
        if found.status == PaymentStatus.NOT_FOUND:
            raise NodeRejected(exc.message, reason=exc.reason) from None
        return found

    def _confirm_unknown_payment(
        self, payment_hash: str, *, missing_means_rejected: bool = False
    ) -> PaymentResult:
        try:
            found = self.lookup_payment(payment_hash=payment_hash)
        except (NodeRejected, NodeUnreachable, OutcomeUnknown):
            raise OutcomeUnknown(
                f"{self.node_name}: CLN pay outcome unknown and listpays unavailable"
            ) from None
        if found.status == PaymentStatus.NOT_FOUND and not missing_means_rejected:
            raise OutcomeUnknown(f"{self.node_name}: CLN pay sent but no payment recorded yet")
        return found

    def lookup_payment(self, *, payment_hash: str) -> PaymentResult:
        if not _HEX64.match(payment_hash):
            return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.NOT_FOUND)
        pays = self._call("listpays", {"payment_hash": payment_hash}).get("pays", [])
        # A hash may have several pay attempts: one success settles it, any live one is pending.
        for pay in pays:
            if pay.get("status") == "complete":
                amount = pay.get("amount_msat")
                sent = _msat(pay.get("amount_sent_msat"))
                return PaymentResult(
                    payment_hash=payment_hash,
                    status=PaymentStatus.SUCCEEDED,
                    amount_msat=None if amount is None else _msat(amount),
                    fee_msat=None if amount is None else sent - _msat(amount),
                    preimage=pay.get("preimage"),
                )
        if any(pay.get("status") == "pending" for pay in pays):
            return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.PENDING)
        recorded = self._ds_get("payfailed", payment_hash)
        if pays or recorded is not None:
            reason = (recorded or {}).get("reason", "failed")
            return PaymentResult(
                payment_hash=payment_hash, status=PaymentStatus.FAILED, failure_reason=reason
            )
        return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.NOT_FOUND)

    # --- on chain ------------------------------------------------------------------------

    def new_address(self) -> str:
        made = self._call("newaddr", {"addresstype": self.address_type}, mutating=True)
        return made[self.address_type]

    def _feerate_perkb(self, target_conf: int) -> int:
        """sat per 1000 vbytes for confirmation within `target_conf` blocks."""
        perkb = self._call("feerates", {"style": "perkb"})["perkb"]
        estimates = sorted(perkb.get("estimates", []), key=lambda e: e["blockcount"])
        rate = None
        for estimate in estimates:
            rate = estimate.get("smoothed_feerate", estimate["feerate"])
            if estimate["blockcount"] >= target_conf:
                break
        if rate is None:
            rate = perkb.get("opening", perkb.get("min_acceptable", 1000))
        return max(int(rate), int(perkb.get("floor", 1000)))

    @staticmethod
    def _output_vbytes(address: str) -> int:
        try:
            script = Script.from_address(address)
        except Exception:
            return 43
        return 8 + 1 + len(script.data)

    def estimate_fee(self, *, outputs: Sequence[tuple[str, int]], target_conf: int) -> FeeEstimate:
        perkb = self._feerate_perkb(target_conf)
        # Coin selection as CLN would roughly do it: largest confirmed outputs first.
        funds = self._call("listfunds").get("outputs", [])
        amounts = sorted(
            (_msat(o.get("amount_msat")) // 1000 for o in funds if o.get("status") == "confirmed"),
            reverse=True,
        )
        needed = sum(amount for _, amount in outputs)
        inputs = covered = 0
        for amount in amounts:
            inputs += 1
            covered += amount
            if covered >= needed:
                break
        vbytes = 11 + 68 * max(1, inputs) + 43  # overhead, p2wpkh-sized inputs, change
        vbytes += sum(self._output_vbytes(address) for address, _ in outputs)
        return FeeEstimate(
            fee_sat=math.ceil(vbytes * perkb / 1000), sat_per_vbyte=max(1, math.ceil(perkb / 1000))
        )

    def send_many(
        self, *, outputs: Sequence[tuple[str, int]], target_conf: int, label: str
    ) -> OnchainTransaction:
        """`multiwithdraw`, with the label kept in CLN's datastore (CLN has no tx labels).

        The intent (label and outputs) is stored before broadcasting and the txid after, so a
        crash in between is recovered by `lookup_transaction(label=...)` matching the outputs
        against the wallet's transactions."""
        if not outputs:
            raise NodeRejected(f"{self.node_name}: nothing to send", reason="invalid_params")
        existing = self.lookup_transaction(label=label)
        if existing is not None:
            raise NodeRejected(
                f"{self.node_name}: label already used by a sent transaction",
                reason="duplicate_label",
            )
        intent = {"outputs": [[address, int(amount)] for address, amount in outputs]}
        perkb = self._feerate_perkb(target_conf)
        self._ds_put(intent, "sendmany", label)
        try:
            sent = self._call(
                "multiwithdraw",
                {
                    "outputs": [{address: int(amount)} for address, amount in outputs],
                    "feerate": f"{perkb}perkb",
                },
                mutating=True,
            )
        except ClnRpcError as exc:
            self._ds_delete("sendmany", label)  # refused: nothing was broadcast
            if exc.cln_code == INVALID_PARAMS and "address" in exc.message.lower():
                raise NodeRejected(exc.message, reason="invalid_address") from None
            raise
        txid = sent["txid"]
        # Broadcast: from here on nothing may raise (an error would read as "nothing was
        # sent" and the outputs would be paid again); the details are best effort.
        # lookup_transaction(label=) still finds it by its outputs without the txid record.
        with contextlib.suppress(LightningError):
            self._ds_put({**intent, "txid": txid}, "sendmany", label)
        try:
            found = self.lookup_transaction(txid=txid)
        except LightningError:
            found = None
        if found is not None:
            return OnchainTransaction(
                txid=found.txid,
                confirmations=found.confirmations,
                fee_sat=found.fee_sat,
                label=label,
                outputs=found.outputs,
                block_height=found.block_height,
            )
        return OnchainTransaction(
            txid=txid,
            confirmations=0,
            fee_sat=None,
            label=label,
            outputs=tuple(OnchainOutput(address=a, amount_sat=v) for a, v in outputs),
        )

    def _wallet_transactions(self) -> list[OnchainTransaction]:
        tip = int(self._call("getinfo").get("blockheight", 0))
        raw = self._call("listtransactions").get("transactions", [])
        funds = self._call("listfunds", {"spent": True}).get("outputs", [])
        ours = {(o["txid"], int(o["output"])): _msat(o.get("amount_msat")) // 1000 for o in funds}
        labels = {
            record["txid"]: label
            for label, record in self._ds_children("sendmany").items()
            if record.get("txid")
        }
        network = _EMBIT_NETWORK[self.network]
        result = []
        for tx in raw:
            txid = tx["hash"]
            outputs = []
            for out in tx.get("outputs", []):
                try:
                    address = Script(bytes.fromhex(out.get("scriptPubKey", ""))).address(network)
                except Exception:
                    address = ""  # OP_RETURN and other address-less scripts
                outputs.append(
                    OnchainOutput(
                        address=address,
                        amount_sat=_msat(out.get("amount_msat")) // 1000,
                        ours=(txid, int(out["index"])) in ours,
                    )
                )
            inputs = [(i["txid"], int(i["index"])) for i in tx.get("inputs", [])]
            fee = None
            if inputs and all(i in ours for i in inputs):
                fee = sum(ours[i] for i in inputs) - sum(o.amount_sat for o in outputs)
            height = int(tx.get("blockheight") or 0)
            result.append(
                OnchainTransaction(
                    txid=txid,
                    confirmations=tip - height + 1 if height > 0 else 0,
                    fee_sat=fee,
                    label=labels.get(txid, ""),
                    outputs=tuple(outputs),
                    block_height=height or None,
                )
            )
        return result

    def lookup_transaction(
        self, *, txid: str | None = None, label: str | None = None
    ) -> OnchainTransaction | None:
        if label is not None:
            records = self._ds_children("sendmany")
            record = records.get(label)
            if record is None:
                return None
            wallet = self._wallet_transactions()
            if record.get("txid"):
                return next((t for t in wallet if t.txid == record["txid"]), None)
            found = self._match_intent(record, wallet, records)
            if found is None:
                return None
            # Remember the match so no other label can claim this transaction.
            with contextlib.suppress(LightningError):
                self._ds_put({**record, "txid": found.txid}, "sendmany", label)
            return OnchainTransaction(
                txid=found.txid,
                confirmations=found.confirmations,
                fee_sat=found.fee_sat,
                label=label,
                outputs=found.outputs,
                block_height=found.block_height,
            )
        if txid is None:
            raise ValueError("lookup_transaction needs txid or label")
        return next((t for t in self._wallet_transactions() if t.txid == txid), None)

    @staticmethod
    def _match_intent(
        record: Mapping[str, Any],
        wallet: Sequence[OnchainTransaction],
        records: Mapping[str, Mapping[str, Any]],
    ) -> OnchainTransaction | None:
        """The wallet's own send paying every intended output, not claimed by another label."""
        claimed = {r["txid"] for r in records.values() if r.get("txid")}
        for tx in wallet:
            if tx.txid in claimed or tx.fee_sat is None:  # fee known = every input is ours
                continue
            remaining = [(_canonical(o.address), o.amount_sat) for o in tx.outputs]
            try:
                for address, amount in record["outputs"]:
                    remaining.remove((_canonical(address), int(amount)))
            except ValueError:
                continue
            return tx
        return None

    def list_transactions(self, *, min_confirmations: int = 0) -> list[OnchainTransaction]:
        return [t for t in self._wallet_transactions() if t.confirmations >= min_confirmations]
