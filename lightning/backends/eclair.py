"""Eclair over its REST API: POST with form-encoded parameters, HTTP basic auth with an empty
user name and the API password, JSON answers (`{"error": "..."}` on failure).

Connection string: `type=eclair;server=http://127.0.0.1:8080;password=...` (or
`passwordfilepath=/path`, or `password=env:NAME`), optionally `labelsfilepath=/path/journal`
(required to send on chain, see below), `feerate=<sat/vB>` and `certfilepath=/path/ca.pem`.

Where Eclair's API differs from what the interface asks, this backend does the following:

- Invoice labels: `createinvoice` has no `externalId` (only payments do), so an invoice
  cannot carry our label; `InvoiceStatus.label` is always "". Invoices are matched by
  payment hash, which Satledger stores when it creates them.
- Cancelling: Eclair has no cancel, but `deleteinvoice` removes a not-yet-paid invoice and a
  later HTLC for it is failed (Eclair only fulfils when it can mark the stored invoice
  received). So `cancel_invoice` deletes it; afterwards the node no longer knows the hash and
  `lookup_invoice` raises NodeRejected(reason="not_found") instead of reporting CANCELED
  (`cancelled_invoice_is_forgotten`). Eclair also purges expired invoices the same way.
- Settled-invoice stream: polls `audit` (payments received, filtered by *received* time;
  `listreceivedpayments` filters by invoice creation time, which misses old invoices paid
  late). The websocket is not used: it keeps no history and drops events when its queue is
  full, so it could not replace the poll anyway. See `_StreamCursor` for the cursor.
- On chain: Eclair has no multi-output send and no labels. `send_many` makes one
  `sendonchain` transaction per output, and keeps a label journal (an append-only file,
  `labelsfilepath=`) with an intent line written (and fsynced) before each send and the txid
  after; an intent without txid (crash mid-call) is resolved by matching the wallet's
  transactions (address, amount, time). A label therefore names several transactions: the
  `OnchainTransaction` returned for a label is their aggregate (txid of the first one,
  total fee, lowest confirmation count, every output).
- Fee estimate: Eclair has no fee-estimation endpoint. `estimate_fee` uses `feerate=`
  (default 10 sat/vB) and a P2WPKH size model; when `feerate=` is set, sends use exactly that
  rate (`feeRatePerByte`), otherwise Eclair's own rate for the confirmation target.
- Sync state: Eclair refuses to start before its bitcoind is synced and has no sync flag, so
  an answering node reports `synced_to_chain=True`.
- Paying: `payinvoice` with `blocking=false` answers a payment id at once; we then poll
  `getsentinfo` for that id until `timeout_s`. The fee limit is `maxFeeFlatSat` rounded down
  to whole satoshis with `maxFeePct=0` (Eclair allows the larger of the two).

Errors: no connection (refused, connect timeout) is NodeUnreachable; a read timeout or a
dropped connection is NodeUnreachable for reads but OutcomeUnknown for calls that change
state (payinvoice, sendonchain, createinvoice, deleteinvoice), as are Eclair's 408/5xx
answers to those; 401/403 is NodeAuthFailed; 404 "Not found" is NodeRejected("not_found");
other 4xx (and 5xx on reads) are NodeRejected with a short reason. Messages never contain
the password (it only travels in the Authorization header, and answers are redacted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import ssl
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from embit import base58
from embit.networks import NETWORKS
from embit.script import address_to_scriptpubkey

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

# getinfo's chainHash (Eclair prints the genesis hash in internal byte order; the usual
# display order is accepted too).
_GENESIS = {
    Network.MAINNET: "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
    Network.TESTNET: "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
    Network.SIGNET: "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6",
    Network.REGTEST: "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
}
NETWORK_BY_CHAIN_HASH = {
    **{h: n for n, h in _GENESIS.items()},
    **{bytes.fromhex(h)[::-1].hex(): n for n, h in _GENESIS.items()},
}
NETWORK_BY_PREFIX = {prefix: network for network, prefix in BOLT11_PREFIX.items()}
_EMBIT_NETWORK = {
    Network.MAINNET: "main",
    Network.TESTNET: "test",
    Network.SIGNET: "signet",
    Network.REGTEST: "regtest",
}

DEFAULT_FEERATE_SAT_VB = 10
# vbytes of a one-input P2WPKH transaction with change, without the paid output.
_TX_BASE_VBYTES = 11 + 68 + 31
_WALLET_PAGE = 500
_WALLET_MAX_PAGES = 200
# Eclair's generic answers carry no detail: "API call failed: check logs for more details".
_FAILURE_REASONS = (
    ("route not found", "no_route"),
    ("incorrect or unknown payment details", "incorrect_payment_details"),
    ("incorrect_or_unknown_payment_details", "incorrect_payment_details"),
    ("balance too low", "insufficient_balance"),
    ("insufficient", "insufficient_balance"),
    ("expired", "invoice_expired"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
)


def _failure_reason(message: str) -> str:
    lowered = message.lower()
    for needle, reason in _FAILURE_REASONS:
        if needle in lowered:
            return reason
    return message[:100] or "failed"


def _timestamp_ms(value: Any) -> int | None:
    """Eclair timestamps: {"iso": "...Z", "unix": seconds} (iso keeps the milliseconds);
    older versions sent a bare number (seconds or milliseconds)."""
    if isinstance(value, dict):
        iso = value.get("iso")
        if isinstance(iso, str):
            with contextlib.suppress(ValueError):
                return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
        value = value.get("unix")
    if isinstance(value, int | float):
        return int(value) if value > 10**11 else int(value * 1000)
    return None


def _datetime_ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, tz=UTC)


def _bolt11_prefix(bolt11: str) -> str:
    """`lnbcrt` of `lnbcrt10u1...`: the letters before the amount and separator."""
    hrp = bolt11.lower().rpartition("1")[0]
    letters = []
    for char in hrp:
        if char.isdigit():
            break
        letters.append(char)
    return "".join(letters)


def address_is_valid(address: str, network: Network) -> bool:
    params = NETWORKS[_EMBIT_NETWORK[network]]
    hrp, sep, _ = address.lower().rpartition("1")
    if sep and hrp in {"bc", "tb", "bcrt"}:
        if hrp != params["bech32"]:
            return False
        try:
            address_to_scriptpubkey(address)
        except Exception:
            return False
        return True
    try:
        raw = base58.decode_check(address)
    except Exception:
        return False
    return len(raw) == 21 and raw[:1] in (params["p2pkh"], params["p2sh"])


def _output_vbytes(address: str) -> int:
    lowered = address.lower()
    if lowered.startswith(("bc1q", "tb1q", "bcrt1q")):
        return 31 if len(lowered) < 50 else 43  # P2WPKH / P2WSH
    if lowered.startswith(("bc1p", "tb1p", "bcrt1p")):
        return 43
    return 34  # legacy P2PKH/P2SH, rounded up


# --- settled-invoice stream cursor --------------------------------------------------------


@dataclass
class _StreamCursor:
    """Resume point of the settled-invoice stream, at most 200 characters (the column).

    Eclair's audit rows are keyed by the time the payment was received (milliseconds), not
    by a sequence number, and are written asynchronously, so a payment can appear slightly
    after one with a later timestamp. The cursor is `e1:<watermark>:<back>:<hashes>`:
    everything received after `watermark` (ms) is new; in the grace window
    [watermark - back, watermark] exactly the payments whose 12-hex-digit hash prefix is
    listed were handled, so a late arrival there is still yielded and nothing is yielded
    twice. Payments appearing more than GRACE_MS late *and* after a restart would be missed;
    while a stream runs, a longer in-memory window (OVERLAP_MS) also catches those. When more
    than MAX_LISTED were received in the grace window the window narrows; if they all share
    the watermark's millisecond, the cursor is `e1:<watermark>:-1:><hash>` instead: at that
    millisecond, only hashes sorting after `<hash>` (the yield order) are new.
    """

    GRACE_MS = 5_000
    OVERLAP_MS = 120_000
    MAX_LISTED = 12
    SHORT = 12

    floor_ms: int = 0  # accept only payments received at or after this
    watermark_ms: int = -1
    seen: dict[str, int] = field(default_factory=dict)  # short hash -> received ms
    after_short: str = ""  # at floor_ms - 1, hashes above this one are still new

    @classmethod
    def parse(cls, cursor: str | None) -> _StreamCursor:
        if not cursor:
            return cls()
        try:
            version, watermark, back, listed = cursor.split(":", 3)
            if version != "e1":
                raise ValueError(version)
            watermark_ms, floor_ms = int(watermark), int(watermark) - int(back)
        except ValueError:
            raise NodeRejected("unreadable Eclair stream cursor", reason="invalid_cursor") from None
        if listed.startswith(">"):
            return cls(floor_ms=floor_ms, watermark_ms=watermark_ms, after_short=listed[1:])
        seen = {short: watermark_ms for short in listed.split(",") if short}
        return cls(floor_ms=floor_ms, watermark_ms=watermark_ms, seen=seen)

    def is_new(self, received_ms: int, payment_hash: str) -> bool:
        short = payment_hash[: self.SHORT]
        if short in self.seen:
            return False
        if received_ms >= self.floor_ms:
            return True
        return (
            received_ms == self.floor_ms - 1 and bool(self.after_short) and short > self.after_short
        )

    def record(self, received_ms: int, payment_hash: str) -> None:
        self.seen[payment_hash[: self.SHORT]] = received_ms
        self.watermark_ms = max(self.watermark_ms, received_ms)
        # Bound the in-memory window of a long-running stream.
        floor = self.watermark_ms - self.OVERLAP_MS
        if floor > self.floor_ms:
            self.floor_ms, self.after_short = floor, ""
            self.seen = {s: ms for s, ms in self.seen.items() if ms >= floor}

    def encode(self) -> str:
        floor = max(self.floor_ms, self.watermark_ms - self.GRACE_MS)
        window = sorted(
            ((ms, short) for short, ms in self.seen.items() if ms >= floor), reverse=True
        )
        if len(window) > self.MAX_LISTED:
            # Too many to list: narrow the window to the newest ones (never splitting one
            # millisecond, so an unlisted payment is never inside the window).
            floor = window[self.MAX_LISTED - 1][0] + 1
            window = [item for item in window if item[0] >= floor]
            if not window:  # all in the watermark's millisecond: resume after the last one
                last = max(short for short, ms in self.seen.items() if ms == self.watermark_ms)
                return f"e1:{self.watermark_ms}:-1:>{last}"
        listed = ",".join(short for _, short in window)
        return f"e1:{self.watermark_ms}:{self.watermark_ms - floor}:{listed}"


# --- label journal for on-chain sends ------------------------------------------------------


class _LabelJournal:
    """Append-only JSON lines: {"op": "intent"|"sent"|"failed", "label", "batch", "i", ...}.
    Every line is flushed and fsynced before the call it describes goes out, so a crash
    leaves at worst an intent whose transaction is found again in the wallet."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(dict(record), separators=(",", ":"), sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # several worker processes may send
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def records(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a torn last line after a crash
                records.append(json.loads(line))
        return records


@dataclass
class _WalletEntry:
    """One `onchaintransactions` row (bitcoind listtransactions: one row per output)."""

    txid: str
    address: str
    amount_sat: int  # negative for what we sent
    fee_sat: int  # the whole transaction's fee on each sending row, 0 on receiving rows
    confirmations: int
    timestamp: int


# --- the backend ---------------------------------------------------------------------------


class EclairBackend(LightningBackend):
    kind = "eclair"
    # Eclair has no invoice cancel; deletion makes the hash unknown (see module docstring).
    cancelled_invoice_is_forgotten = True
    stream_poll_s = 1.0
    payment_poll_s = 0.1

    def __init__(
        self,
        *,
        node_name: str,
        network: Network,
        timeout_s: float,
        server: str,
        password: str,
        labels_path: str | None = None,
        feerate_sat_vb: int | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(node_name=node_name, network=network, timeout_s=timeout_s)
        self.server = server.rstrip("/")
        self._password = password
        self._journal = _LabelJournal(labels_path) if labels_path else None
        self.feerate_sat_vb = feerate_sat_vb
        self._verify = verify
        self._client = self._new_client()

    def __repr__(self) -> str:
        return f"EclairBackend(node_name={self.node_name!r}, server={self.server!r})"

    @classmethod
    def from_connection(
        cls, params: Mapping[str, str], *, node_name: str, network: Network, timeout_s: float
    ) -> EclairBackend:
        server = params.get("server", "")
        if not server.startswith(("http://", "https://")):
            raise InvalidConnectionString("eclair needs server=http(s)://host:port")
        if "passwordfilepath" in params:
            try:
                with open(params["passwordfilepath"], encoding="utf-8") as handle:
                    password = handle.read().strip()
            except OSError as exc:
                raise InvalidConnectionString(
                    f"cannot read passwordfilepath ({exc.strerror})"
                ) from None
        elif "password" in params:
            password = resolve_secret(params["password"])
        else:
            raise InvalidConnectionString("eclair needs password= or passwordfilepath=")
        feerate = params.get("feerate")
        if feerate is not None and (not feerate.isdigit() or int(feerate) < 1):
            raise InvalidConnectionString("feerate= must be a whole number of sat/vB >= 1")
        verify: ssl.SSLContext | bool = True
        if "certfilepath" in params:
            verify = ssl.create_default_context(cafile=params["certfilepath"])
        return cls(
            node_name=node_name,
            network=network,
            timeout_s=timeout_s,
            server=server,
            password=password,
            labels_path=params.get("labelsfilepath") or None,
            feerate_sat_vb=int(feerate) if feerate else None,
            verify=verify,
        )

    def close(self) -> None:
        self._client.close()

    # --- HTTP --------------------------------------------------------------------------------

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server,
            auth=httpx.BasicAuth("", self._password),
            timeout=httpx.Timeout(self.timeout_s),
            verify=self._verify,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _post(
        self,
        endpoint: str,
        data: Mapping[str, str | int] | None = None,
        *,
        mutating: bool = False,
        reject_reason: str = "rejected",
        expect: type | tuple[type, ...] = dict,
    ) -> Any:
        """One API call. `mutating`: the call changes node state, so a failure after the
        request left us is OutcomeUnknown, never NodeUnreachable; it also gets a connection of
        its own, so a dropped connection cannot be a stale pooled keep-alive. `expect`: the
        JSON type of a good answer (a proxy's HTML page is not one)."""
        form = {key: str(value) for key, value in (data or {}).items()}
        what = f"eclair {endpoint} on {self.node_name}"
        fresh_connection = mutating
        client = self._new_client() if fresh_connection else self._client
        try:
            response = client.post(f"/{endpoint}", data=form)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NodeUnreachable(f"{what}: cannot connect ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            # Read/write timeouts and dropped connections: the request may have arrived.
            message = f"{what}: no answer ({type(exc).__name__})"
            if mutating:
                raise OutcomeUnknown(message, reason="timeout") from None
            raise NodeUnreachable(message) from None
        finally:
            if fresh_connection:
                client.close()
        body = self._answer(response, what=what, mutating=mutating, reject_reason=reject_reason)
        if not isinstance(body, expect):
            message = f"{what}: unexpected answer ({type(body).__name__})"
            if mutating:
                raise OutcomeUnknown(message, reason="bad_response")
            raise NodeRejected(message, reason="bad_response")
        return body

    def _answer(
        self, response: httpx.Response, *, what: str, mutating: bool, reject_reason: str
    ) -> Any:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code < 300:
            return body
        detail = body.get("error", "") if isinstance(body, dict) else str(body)
        detail = self._redact(" ".join(str(detail).split())[:200])
        status = response.status_code
        if status in (401, 403):
            raise NodeAuthFailed(f"{what}: the node refused the API password ({status})")
        if status in (408, 502, 503, 504):
            message = f"{what}: the node timed out or is unavailable ({status})"
            if mutating:
                raise OutcomeUnknown(message, reason="timeout")
            raise NodeUnreachable(message)
        if status >= 500 and mutating:
            # Eclair answers 500 for any internal failure, including an ask timeout while
            # the action went ahead: we cannot tell whether it was carried out.
            raise OutcomeUnknown(f"{what}: node error ({status}: {detail})", reason="node_error")
        if status == 404:
            reason = "not_found" if detail.lower() == "not found" else "unsupported"
            raise NodeRejected(f"{what}: {detail or 'not found'} ({status})", reason=reason)
        reason = reject_reason if status < 500 else "node_error"
        raise NodeRejected(f"{what}: {detail or 'rejected'} ({status})", reason=reason)

    # --- info --------------------------------------------------------------------------------

    def get_info(self) -> NodeInfo:
        info = self._post("getinfo")
        chain_hash = str(info.get("chainHash", "")).lower()
        network = NETWORK_BY_CHAIN_HASH.get(chain_hash)
        if network is None:
            raise LightningError(
                f"eclair getinfo on {self.node_name}: unknown chain {chain_hash[:16]}...",
                reason="unknown_network",
            )
        return NodeInfo(
            alias=str(info.get("alias", "")),
            pubkey=str(info["nodeId"]),
            network=network,
            block_height=int(info.get("blockHeight", 0)),
            synced_to_chain=True,
            version=str(info.get("version", "")),
        )

    def get_balances(self) -> Balances:
        channels = self._post("usablebalances", expect=list)
        onchain = self._post("onchainbalance")
        return Balances(
            channel_local_msat=sum(int(c.get("canSend", 0)) for c in channels),
            channel_remote_msat=sum(int(c.get("canReceive", 0)) for c in channels),
            onchain_confirmed_sat=int(onchain.get("confirmed", 0)),
            onchain_unconfirmed_sat=max(int(onchain.get("unconfirmed", 0)), 0),
        )

    # --- receiving -----------------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        amount_msat: int | None,
        memo: str,
        expiry_s: int,
        label: str,
        description_hash: bytes | None = None,
    ) -> CreatedInvoice:
        # `label` cannot be stored: Eclair's createinvoice has no externalId.
        data: dict[str, str | int] = {"expireIn": int(expiry_s)}
        if description_hash is not None:
            data["descriptionHash"] = description_hash.hex()
        else:
            data["description"] = memo
        if amount_msat is not None:
            data["amountMsat"] = int(amount_msat)
        invoice = self._post("createinvoice", data, mutating=True, reject_reason="invalid_invoice")
        created = int(invoice["timestamp"])
        return CreatedInvoice(
            payment_hash=str(invoice["paymentHash"]),
            bolt11=str(invoice["serialized"]),
            amount_msat=int(invoice["amount"]) if invoice.get("amount") is not None else None,
            expires_at=datetime.fromtimestamp(created + int(invoice.get("expiry", 3600)), tz=UTC),
        )

    def _received_info(self, payment_hash: str) -> dict[str, Any]:
        if not _is_hash(payment_hash):
            raise NodeRejected("payment hash must be 32 bytes of hex", reason="not_found")
        return self._post("getreceivedinfo", {"paymentHash": payment_hash})

    @staticmethod
    def _invoice_status(received: Mapping[str, Any], payment_hash: str) -> InvoiceStatus:
        invoice = received.get("invoice") or {}
        status = received.get("status") or {}
        kind = status.get("type")
        if kind == "received":
            state = InvoiceState.SETTLED
            amount_received = int(status.get("amount", 0))
            settled_at = _datetime_ms(_timestamp_ms(status.get("receivedAt")))
        else:
            state = InvoiceState.OPEN if kind == "pending" else InvoiceState.CANCELED
            amount_received, settled_at = 0, None
        return InvoiceStatus(
            payment_hash=str(invoice.get("paymentHash") or payment_hash),
            state=state,
            amount_msat=int(invoice["amount"]) if invoice.get("amount") is not None else None,
            amount_received_msat=amount_received,
            preimage=received.get("paymentPreimage") if state == InvoiceState.SETTLED else None,
            settled_at=settled_at,
        )

    def lookup_invoice(self, *, payment_hash: str) -> InvoiceStatus:
        return self._invoice_status(self._received_info(payment_hash), payment_hash)

    def cancel_invoice(self, *, payment_hash: str) -> None:
        if self.lookup_invoice(payment_hash=payment_hash).state == InvoiceState.SETTLED:
            raise NodeRejected("the invoice is already paid", reason="already_paid")
        try:
            self._post("deleteinvoice", {"paymentHash": payment_hash}, mutating=True, expect=str)
        except NodeRejected:
            # Eclair refuses to delete a received invoice with a generic 400: say which.
            if self.lookup_invoice(payment_hash=payment_hash).state == InvoiceState.SETTLED:
                raise NodeRejected("the invoice is already paid", reason="already_paid") from None
            raise

    def stream_settled_invoices(self, *, cursor: str | None) -> Iterator[InvoiceSettlement]:
        state = _StreamCursor.parse(cursor)
        while True:
            for received_ms, payment_hash, amount in self._received_since(state.floor_ms):
                if not state.is_new(received_ms, payment_hash):
                    continue
                status = self._settled_status(payment_hash, received_ms, amount)
                state.record(received_ms, payment_hash)
                yield InvoiceSettlement(invoice=status, cursor=state.encode())
            self._wait_for_more()

    def _wait_for_more(self) -> None:
        """Pause between audit polls (one place, so tests can stop at "nothing more")."""
        time.sleep(self.stream_poll_s)

    def _received_since(self, floor_ms: int) -> list[tuple[int, str, int]]:
        """(received ms, payment hash, amount) of every payment received since `floor_ms`,
        oldest first. `to` is explicit: Eclair's default window is only the last day."""
        audit = self._post(
            "audit", {"from": max(floor_ms // 1000, 0), "to": int(time.time()) + 86_400}
        )
        found = []
        for entry in audit.get("received", []):
            parts = entry.get("parts") or []
            stamps = [_timestamp_ms(p.get("receivedAt", p.get("timestamp"))) for p in parts]
            known = [ms for ms in stamps if ms is not None]
            if not known:
                continue
            amount = int(entry.get("amount") or sum(int(p.get("amount", 0)) for p in parts))
            found.append((max(known), str(entry["paymentHash"]), amount))
        found.sort()
        return found

    def _settled_status(self, payment_hash: str, received_ms: int, amount: int) -> InvoiceStatus:
        try:
            status = self.lookup_invoice(payment_hash=payment_hash)
        except NodeRejected:
            status = None
        if status is not None and status.state == InvoiceState.SETTLED:
            return status
        # Received without a stored invoice we can read (e.g. keysend): report what arrived.
        return InvoiceStatus(
            payment_hash=payment_hash,
            state=InvoiceState.SETTLED,
            amount_msat=None,
            amount_received_msat=amount,
            preimage=None,
            settled_at=_datetime_ms(received_ms),
        )

    # --- paying --------------------------------------------------------------------------------

    def decode_invoice(self, *, bolt11: str) -> DecodedInvoice:
        bolt11 = bolt11.strip()
        prefix = _bolt11_prefix(bolt11)
        expected = BOLT11_PREFIX[self.network]
        if prefix != expected:
            raise NodeRejected(
                f"not a {self.network} invoice (prefix {prefix[:8]!r}, expected {expected!r})",
                reason="invalid_invoice",
            )
        parsed = self._post("parseinvoice", {"invoice": bolt11}, reject_reason="invalid_invoice")
        created = int(parsed["timestamp"])
        return DecodedInvoice(
            payment_hash=str(parsed["paymentHash"]),
            amount_msat=int(parsed["amount"]) if parsed.get("amount") is not None else None,
            description=str(parsed.get("description", "")),
            description_hash=parsed.get("descriptionHash"),
            payee=str(parsed["nodeId"]),
            created_at=datetime.fromtimestamp(created, tz=UTC),
            expires_at=datetime.fromtimestamp(created + int(parsed.get("expiry", 3600)), tz=UTC),
            network=NETWORK_BY_PREFIX.get(str(parsed.get("prefix", prefix)), self.network),
            min_final_cltv_expiry=int(parsed.get("minFinalCltvExpiry", 18)),
        )

    def pay_invoice(
        self,
        *,
        bolt11: str,
        max_fee_msat: int,
        timeout_s: float,
        amount_msat: int | None = None,
    ) -> PaymentResult:
        decoded = self.decode_invoice(bolt11=bolt11)
        if decoded.amount_msat is None and not amount_msat:
            raise NodeRejected("an amountless invoice needs an amount", reason="amount_required")
        if decoded.expires_at <= datetime.now(tz=UTC):
            raise NodeRejected("the invoice has expired", reason="invoice_expired")
        previous = self._payment_result(decoded.payment_hash)
        if previous.status == PaymentStatus.SUCCEEDED:
            raise NodeRejected("this invoice is already paid", reason="already_paid")
        if previous.status == PaymentStatus.PENDING:
            raise NodeRejected("a payment of this invoice is in flight", reason="in_flight")
        data: dict[str, str | int] = {
            "invoice": bolt11.strip(),
            # Eclair allows max(flat, pct * amount): a flat limit alone, in whole sat, never
            # more than asked (rounded down).
            "maxFeeFlatSat": max(int(max_fee_msat), 0) // 1000,
            "maxFeePct": 0,
            "blocking": "false",
        }
        if decoded.amount_msat is None:
            data["amountMsat"] = int(amount_msat or 0)
        answer = self._post(
            "payinvoice",
            data,
            mutating=True,
            reject_reason="payment_rejected",
            expect=(str, dict),
        )
        # Accepted: from here the payment exists, so failures to learn more mean PENDING.
        # Follow this payment by its id: earlier failed attempts for the hash are not it.
        payment_id = answer if isinstance(answer, str) else None
        deadline = time.monotonic() + max(timeout_s, 0)
        while True:
            try:
                result = self._payment_result(decoded.payment_hash, payment_id=payment_id)
            except (NodeUnreachable, NodeRejected):
                result = PaymentResult(
                    payment_hash=decoded.payment_hash, status=PaymentStatus.PENDING
                )
            if result.status == PaymentStatus.NOT_FOUND:  # not written yet
                result = PaymentResult(
                    payment_hash=decoded.payment_hash, status=PaymentStatus.PENDING
                )
            if result.status != PaymentStatus.PENDING or time.monotonic() >= deadline:
                return result
            time.sleep(min(self.payment_poll_s, max(deadline - time.monotonic(), 0)))

    def lookup_payment(self, *, payment_hash: str) -> PaymentResult:
        return self._payment_result(payment_hash)

    def _payment_result(self, payment_hash: str, *, payment_id: str | None = None) -> PaymentResult:
        """Eclair lists every attempt (and every part of a multi-part attempt) for a hash, or
        for one payment id. Succeeded once all parts of the attempt that delivered the
        preimage are final; failed only if every attempt failed."""
        if not _is_hash(payment_hash):
            return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.NOT_FOUND)
        query = {"id": payment_id} if payment_id else {"paymentHash": payment_hash}
        attempts = self._post("getsentinfo", query, expect=list)
        if not attempts:
            return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.NOT_FOUND)
        sent = [a for a in attempts if (a.get("status") or {}).get("type") == "sent"]
        if sent:
            parent = sent[0].get("parentId")
            siblings = [a for a in attempts if a.get("parentId") == parent]
            if any((a.get("status") or {}).get("type") == "pending" for a in siblings):
                return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.PENDING)
            parts = [a for a in siblings if (a.get("status") or {}).get("type") == "sent"]
            return PaymentResult(
                payment_hash=payment_hash,
                status=PaymentStatus.SUCCEEDED,
                amount_msat=int(sent[0].get("recipientAmount", sent[0].get("amount", 0))),
                fee_msat=sum(int(a["status"].get("feesPaid", 0)) for a in parts),
                preimage=str(sent[0]["status"]["paymentPreimage"]),
            )
        if any((a.get("status") or {}).get("type") != "failed" for a in attempts):
            return PaymentResult(payment_hash=payment_hash, status=PaymentStatus.PENDING)
        last = max(attempts, key=lambda a: _timestamp_ms(a["status"].get("completedAt")) or 0)
        failures = last["status"].get("failures") or []
        message = str(failures[-1].get("failureMessage", "")) if failures else ""
        return PaymentResult(
            payment_hash=payment_hash,
            status=PaymentStatus.FAILED,
            amount_msat=int(last.get("recipientAmount", 0)) or None,
            failure_reason=_failure_reason(message),
        )

    # --- on chain ------------------------------------------------------------------------------

    def new_address(self) -> str:
        return str(self._post("getnewaddress", expect=str))

    def _check_outputs(self, outputs: Sequence[tuple[str, int]]) -> None:
        if not outputs:
            raise NodeRejected("no outputs to pay", reason="invalid_amount")
        for address, amount_sat in outputs:
            if not address_is_valid(address, self.network):
                raise NodeRejected(
                    f"not a {self.network} address: {address[:90]!r}", reason="invalid_address"
                )
            if int(amount_sat) <= 0:
                raise NodeRejected("amounts must be positive", reason="invalid_amount")

    def estimate_fee(self, *, outputs: Sequence[tuple[str, int]], target_conf: int) -> FeeEstimate:
        # No estimator in Eclair's API: configured rate, one transaction per output.
        self._check_outputs(outputs)
        rate = self.feerate_sat_vb or DEFAULT_FEERATE_SAT_VB
        vbytes = sum(_TX_BASE_VBYTES + _output_vbytes(address) for address, _ in outputs)
        return FeeEstimate(fee_sat=rate * vbytes, sat_per_vbyte=rate)

    def send_many(
        self, *, outputs: Sequence[tuple[str, int]], target_conf: int, label: str
    ) -> OnchainTransaction:
        """One `sendonchain` transaction per output (Eclair has no multi-output send); the
        returned transaction is the aggregate described in the module docstring. A failure
        after some outputs were sent raises OutcomeUnknown(reason="partial"): the label's
        aggregate then lists only the outputs actually paid."""
        if self._journal is None:
            raise NodeRejected(
                "sending on chain with Eclair needs labelsfilepath= (label journal)",
                reason="unsupported",
            )
        self._check_outputs(outputs)
        if self._label_txids(label):
            raise NodeRejected(f"label {label!r} was already sent", reason="duplicate_label")
        needed = sum(int(a) for _, a in outputs)
        needed += self.estimate_fee(outputs=outputs, target_conf=target_conf).fee_sat
        confirmed = int(self._post("onchainbalance").get("confirmed", 0))
        if confirmed < needed:
            raise NodeRejected("not enough confirmed on-chain funds", reason="insufficient_balance")
        batch = uuid.uuid4().hex
        for index, (address, amount_sat) in enumerate(outputs):
            key = {"label": label, "batch": batch, "i": index}
            intent = {"op": "intent", "address": address, "amount_sat": int(amount_sat)}
            try:
                self._journal.append({**key, **intent, "at": int(time.time())})
            except OSError as exc:
                # Nothing is sent without its intent on disk.
                error = NodeRejected if index == 0 else OutcomeUnknown
                raise error(
                    f"cannot write the label journal ({exc.strerror}); {index} outputs sent",
                    reason="journal_error" if index == 0 else "partial",
                ) from None
            data: dict[str, str | int] = {"address": address, "amountSatoshis": int(amount_sat)}
            if self.feerate_sat_vb:
                data["feeRatePerByte"] = self.feerate_sat_vb
            else:
                data["confirmationTarget"] = max(int(target_conf), 1)
            try:
                txid = str(self._post("sendonchain", data, mutating=True, expect=str))
            except (NodeRejected, NodeUnreachable, NodeAuthFailed) as exc:
                # Certainly not sent: this output is settled as failed.
                with contextlib.suppress(OSError):  # unrecorded, the intent matches nothing
                    self._journal.append({**key, "op": "failed"})
                if index == 0:
                    raise
                raise OutcomeUnknown(
                    f"sent {index} of {len(outputs)} outputs, then: {exc.message}", reason="partial"
                ) from None
            except OutcomeUnknown as exc:
                raise OutcomeUnknown(
                    f"output {index + 1} of {len(outputs)} may or may not be sent: {exc.message}"
                    " (lookup_transaction(label=...) resolves it)",
                    reason="partial" if index else exc.reason,
                ) from None
            try:
                self._journal.append({**key, "op": "sent", "txid": txid})
            except OSError as exc:
                # Sent, but unrecorded: the intent lets lookup_transaction find it again.
                raise OutcomeUnknown(
                    f"sent {txid} but cannot write the label journal ({exc.strerror})",
                    reason="journal_error",
                ) from None
        result = self.lookup_transaction(label=label)
        assert result is not None  # we just journalled the txids
        return result

    def _label_txids(self, label: str) -> list[str]:
        """Transactions sent under `label`, resolving crash-interrupted intents by matching
        the wallet's sends (same address and amount, after the intent, not claimed)."""
        if self._journal is None:
            return []
        records = self._journal.records()
        claimed = {r["txid"] for r in records if r.get("op") == "sent"}
        intents: dict[tuple[str, int], dict[str, Any]] = {}
        settled: dict[tuple[str, int], str | None] = {}
        for r in records:
            if r.get("label") != label:
                continue
            key = (str(r.get("batch")), int(r.get("i", 0)))
            if r.get("op") == "intent":
                intents[key] = r
            elif r.get("op") == "sent":
                settled[key] = str(r["txid"])
            elif r.get("op") == "failed":
                settled[key] = None
        unresolved = [key for key in intents if key not in settled]
        if unresolved:
            entries = self._wallet_entries()
            for key in unresolved:
                intent = intents[key]
                for entry in reversed(entries):  # oldest first
                    if (
                        entry.txid not in claimed
                        and entry.address == intent["address"]
                        and entry.amount_sat == -int(intent["amount_sat"])
                        and entry.timestamp >= int(intent["at"]) - 120
                    ):
                        claimed.add(entry.txid)
                        settled[key] = entry.txid
                        record = {"label": label, "batch": key[0], "i": key[1]}
                        self._journal.append({**record, "op": "sent", "txid": entry.txid})
                        break
        ordered = sorted(intents, key=lambda k: (intents[k].get("at", 0), k))
        txids: list[str] = []
        for key in ordered:
            txid = settled.get(key)
            if txid and txid not in txids:
                txids.append(txid)
        return txids

    def _label_of(self, txid: str) -> str:
        if self._journal is None:
            return ""
        for r in self._journal.records():
            if r.get("op") == "sent" and r.get("txid") == txid:
                return str(r.get("label", ""))
        return ""

    def _wallet_entries(self, *, stop_at_txid: str | None = None) -> list[_WalletEntry]:
        """`onchaintransactions` rows, newest first, page by page."""
        entries: list[_WalletEntry] = []
        found_on_page = False
        for page in range(_WALLET_MAX_PAGES):
            rows = self._post(
                "onchaintransactions",
                {"count": _WALLET_PAGE, "skip": page * _WALLET_PAGE},
                expect=list,
            )
            page_has = False
            for row in rows:
                entry = _WalletEntry(
                    txid=str(row["txid"]),
                    address=str(row.get("address", "")),
                    amount_sat=int(row.get("amount", 0)),
                    fee_sat=abs(int(row.get("fees", 0) or 0)),
                    confirmations=max(int(row.get("confirmations", 0)), 0),
                    timestamp=int(row.get("timestamp", 0)),
                )
                entries.append(entry)
                page_has = page_has or entry.txid == stop_at_txid
            if len(rows) < _WALLET_PAGE:
                break
            # A transaction's rows may straddle two pages: stop one page after it.
            if stop_at_txid and found_on_page and not page_has:
                break
            found_on_page = found_on_page or page_has
        return entries

    def _transactions(self, entries: Sequence[_WalletEntry]) -> dict[str, OnchainTransaction]:
        grouped: dict[str, list[_WalletEntry]] = {}
        for entry in entries:
            grouped.setdefault(entry.txid, []).append(entry)
        height = None
        transactions = {}
        for txid, rows in grouped.items():
            outputs: dict[tuple[str, int], bool] = {}
            for row in rows:  # a send to our own address has a sending and a receiving row
                key = (row.address, abs(row.amount_sat))
                outputs[key] = outputs.get(key, False) or row.amount_sat > 0
            sending = [row for row in rows if row.amount_sat < 0]
            confirmations = max(row.confirmations for row in rows)
            block_height = None
            if confirmations > 0:
                if height is None:
                    height = self.get_info().block_height
                block_height = height - confirmations + 1
            transactions[txid] = OnchainTransaction(
                txid=txid,
                confirmations=confirmations,
                fee_sat=max(row.fee_sat for row in sending) if sending else None,
                outputs=tuple(
                    OnchainOutput(address=address, amount_sat=amount, ours=ours)
                    for (address, amount), ours in outputs.items()
                ),
                block_height=block_height,
            )
        return transactions

    def lookup_transaction(
        self, *, txid: str | None = None, label: str | None = None
    ) -> OnchainTransaction | None:
        if txid is not None:
            found = self._transactions(self._wallet_entries(stop_at_txid=txid)).get(txid)
            if found is None:
                return None
            return _with_label(found, self._label_of(txid))
        if label is None:
            raise NodeRejected("give a txid or a label", reason="invalid_request")
        txids = self._label_txids(label)
        if not txids:
            return None
        known = self._transactions(self._wallet_entries())
        parts = [
            known.get(t) or OnchainTransaction(txid=t, confirmations=0, fee_sat=None) for t in txids
        ]
        fees = [p.fee_sat for p in parts]
        heights = [p.block_height for p in parts]
        return OnchainTransaction(
            txid=parts[0].txid,
            confirmations=min(p.confirmations for p in parts),
            fee_sat=None if None in fees else sum(f for f in fees if f is not None),
            label=label,
            outputs=tuple(o for p in parts for o in p.outputs),
            block_height=None if None in heights else max(h for h in heights if h is not None),
        )

    def list_transactions(self, *, min_confirmations: int = 0) -> list[OnchainTransaction]:
        transactions = self._transactions(self._wallet_entries())
        return [tx for tx in transactions.values() if tx.confirmations >= min_confirmations]


def _with_label(tx: OnchainTransaction, label: str) -> OnchainTransaction:
    return dataclasses.replace(tx, label=label) if label else tx


def _is_hash(value: str) -> bool:
    if len(value) != 64:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
