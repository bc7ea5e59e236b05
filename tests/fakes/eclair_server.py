"""An in-process Eclair node speaking Eclair's REST API over real HTTP.

Form-encoded POSTs with HTTP basic auth (empty user, the API password), JSON answers shaped
as Eclair writes them (timestamps as {"iso", "unix"}, payment statuses with a `type`,
errors as {"error": "..."} with Eclair's status codes: 401 bad password, 404 unknown route or
"Not found", 400 for rejected parameters and IllegalArgumentException, 500 for any other
failure). Behind it a small simulated node: it signs real regtest BOLT 11 invoices, pays
outside invoices through a simulated network charging a routing fee, and keeps an on-chain
wallet with real regtest bech32 addresses, blocks and confirmations.

The same object drives the outside world for tests (the contract's `World`): outside payers
and payees, failing or hanging payments, mining, incoming transactions, stop/start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import bolt11
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from coincurve import PrivateKey
from embit import script
from embit.ec import PrivateKey as WalletKey
from embit.networks import NETWORKS

REGTEST_CHAIN_HASH = "06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f"
GENERIC_FAILURE = "API call failed: check logs for more details"
REGTEST = NETWORKS["regtest"]


class OutsidePaymentFailed(Exception):
    """The outside payer could not pay one of our invoices."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


def timestamp_json(ms: int) -> dict[str, Any]:
    """Eclair's TimestampMilli: ISO instant (milliseconds shown when non-zero), unix seconds."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    iso = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        iso += f".{ms % 1000:03d}"
    return {"iso": iso + "Z", "unix": ms // 1000}


def sign_invoice(
    *,
    key: PrivateKey,
    payment_hash: str,
    amount_msat: int | None,
    description: str | None,
    description_hash: str | None,
    expiry_s: int,
    min_final_cltv: int = 30,
) -> str:
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash)
    tags.add(TagChar.payment_secret, os.urandom(32).hex())
    if description_hash is not None:
        tags.add(TagChar.description_hash, description_hash)
    else:
        tags.add(TagChar.description, description or "")
    tags.add(TagChar.expire_time, expiry_s)
    tags.add(TagChar.min_final_cltv_expiry, min_final_cltv)
    invoice = Bolt11(
        currency="bcrt",
        date=int(time.time()),
        tags=tags,
        amount_msat=MilliSatoshi(amount_msat) if amount_msat else None,
    )
    # ignore_exceptions: an empty description is valid for Eclair (and BOLT 11).
    return bolt11.encode(invoice, key.to_hex(), ignore_exceptions=True)


def invoice_json(serialized: str) -> dict[str, Any]:
    """Eclair's JSON for a Bolt11Invoice (as createinvoice and parseinvoice answer)."""
    decoded = bolt11.decode(serialized)
    body: dict[str, Any] = {
        "prefix": "ln" + decoded.currency,
        "timestamp": decoded.date,
        "nodeId": decoded.payee,
        "serialized": serialized,
    }
    if decoded.description_hash is not None:
        body["descriptionHash"] = decoded.description_hash
    else:
        body["description"] = decoded.description or ""
    body["paymentHash"] = decoded.payment_hash
    if decoded.tags.has(TagChar.expire_time):
        body["expiry"] = decoded.expiry
    if decoded.tags.has(TagChar.min_final_cltv_expiry):
        body["minFinalCltvExpiry"] = decoded.min_final_cltv_expiry
    if decoded.amount_msat:
        body["amount"] = int(decoded.amount_msat)
    body["features"] = {
        "activated": {"var_onion_optin": "mandatory", "payment_secret": "mandatory"},
        "unknown": [],
    }
    body["routingInfo"] = []
    return body


@dataclass
class Incoming:
    serialized: str
    payment_hash: str
    preimage: str
    amount_msat: int | None
    created_ms: int
    expires_ms: int
    received_msat: int = 0
    received_ms: int | None = None


@dataclass
class Outgoing:
    id: str
    parent_id: str
    payment_hash: str
    amount_msat: int
    recipient_node_id: str
    created_ms: int
    serialized: str
    status: str = "pending"  # pending / sent / failed
    preimage: str = ""
    fee_msat: int = 0
    failure: tuple[str, str] = ("", "")  # (failureType, failureMessage)
    completed_ms: int = 0


@dataclass
class WalletTx:
    txid: str
    rows: list[tuple[str, int, int]]  # (address, signed amount sat, signed fee sat)
    time_s: int
    height: int | None = None


@dataclass
class FakeEclairNode:
    password: str
    alias: str = "eclair-fake"
    # Network behaviour
    fee_base_msat: int = 100
    fee_ppm: int = 1_000
    local_msat: int = 50_000_000_000
    remote_msat: int = 30_000_000_000
    onchain_confirmed_sat: int = 1_000_000_000
    block_height: int = 200
    settle_delay_s: float = 0.02
    # Test knobs: answer late, or fail the next call to an endpoint.
    response_delay_s: float = 0.0
    slow_endpoints: set[str] = field(default_factory=set)
    injected_errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = PrivateKey()
        self.node_id = self.key.public_key.format().hex()
        self.outside_key = PrivateKey()
        self.lock = threading.RLock()
        self.incoming: dict[str, Incoming] = {}
        self.audit_received: list[dict[str, Any]] = []
        self.outgoing: list[Outgoing] = []
        self.outside_payees: dict[str, str] = {}  # payment hash -> preimage
        self.wallet_keys: set[str] = set()
        self.wallet_txs: list[WalletTx] = []
        self.onchain_unconfirmed_sat = 0
        self._fail_next: list[str] = []
        self._hang_next = 0
        self._hung: list[Outgoing] = []
        self.httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self._thread: threading.Thread | None = None

    # --- HTTP server lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again, on the same port after `stop`), with the node's state kept."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.node = self
        self.httpd = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Really shut down: stop listening and cut every open connection."""
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.httpd = None

    # --- World: outside payers and payees ---------------------------------------------------

    def pay_from_outside(
        self, bolt11_invoice: str, *, amount_msat: int | None = None, received_ms: int | None = None
    ) -> None:
        decoded = bolt11.decode(bolt11_invoice)
        with self.lock:
            incoming = self.incoming.get(decoded.payment_hash)
            if incoming is None:
                raise OutsidePaymentFailed("incorrect_or_unknown_payment_details")
            if incoming.received_ms is not None:
                raise OutsidePaymentFailed("invoice already paid")
            if now_ms() > incoming.expires_ms:
                raise OutsidePaymentFailed("invoice expired")
            amount = amount_msat if amount_msat is not None else incoming.amount_msat
            if amount is None or (incoming.amount_msat and amount < incoming.amount_msat):
                raise OutsidePaymentFailed("incorrect_or_unknown_payment_details")
            if amount > self.remote_msat:
                raise OutsidePaymentFailed("no route: not enough inbound liquidity")
            at = received_ms if received_ms is not None else now_ms()
            incoming.received_msat = amount
            incoming.received_ms = at
            self.remote_msat -= amount
            self.local_msat += amount
            self.audit_received.append(
                {
                    "type": "payment-received",
                    "paymentHash": incoming.payment_hash,
                    "parts": [
                        {
                            "channelId": hashlib.sha256(b"channel").hexdigest(),
                            "remoteNodeId": self.outside_key.public_key.format().hex(),
                            "amount": amount,
                            "receivedAt": timestamp_json(at),
                            "_ms": at,
                        }
                    ],
                }
            )

    def outside_invoice(self, *, amount_msat: int | None, memo: str = "") -> str:
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        with self.lock:
            self.outside_payees[payment_hash] = preimage.hex()
        return sign_invoice(
            key=self.outside_key,
            payment_hash=payment_hash,
            amount_msat=amount_msat,
            description=memo,
            description_hash=None,
            expiry_s=3600,
            min_final_cltv=18,
        )

    def routing_fee_msat(self, amount_msat: int) -> int:
        return self.fee_base_msat + amount_msat * self.fee_ppm // 1_000_000

    def fail_next_payment(self, reason: str = "no_route") -> None:
        with self.lock:
            self._fail_next.append(reason)

    def hang_next_payment(self) -> None:
        with self.lock:
            self._hang_next += 1

    def resolve_hung_payments(self, *, succeed: bool) -> None:
        with self.lock:
            hung, self._hung = self._hung, []
            for payment in hung:
                if succeed:
                    self._succeed(payment)
                else:
                    self._fail(payment, "Remote", "incorrect or unknown payment details")

    def mine(self, blocks: int) -> None:
        with self.lock:
            for tx in self.wallet_txs:
                if tx.height is None:
                    tx.height = self.block_height + 1
                    incoming = sum(amount for _, amount, _ in tx.rows if amount > 0)
                    self.onchain_unconfirmed_sat -= incoming
                    self.onchain_confirmed_sat += incoming
            self.block_height += blocks

    def receive_onchain(self, *, address: str, amount_sat: int) -> str:
        txid = os.urandom(32).hex()
        with self.lock:
            self.wallet_txs.append(
                WalletTx(txid=txid, rows=[(address, amount_sat, 0)], time_s=int(time.time()))
            )
            self.onchain_unconfirmed_sat += amount_sat
        return txid

    # --- the simulated node behind the API ----------------------------------------------------

    def _succeed(self, payment: Outgoing) -> None:
        preimage = self.outside_payees.get(payment.payment_hash)
        if preimage is None:
            self._fail(payment, "Remote", "incorrect or unknown payment details")
            return
        payment.status = "sent"
        payment.preimage = preimage
        payment.fee_msat = self.routing_fee_msat(payment.amount_msat)
        payment.completed_ms = now_ms()
        self.local_msat -= payment.amount_msat + payment.fee_msat
        self.remote_msat += payment.amount_msat + payment.fee_msat

    def _fail(self, payment: Outgoing, failure_type: str, message: str) -> None:
        payment.status = "failed"
        payment.failure = (failure_type, message)
        payment.completed_ms = now_ms()

    def _route(self, payment: Outgoing, max_fee_msat: int) -> None:
        """What the network does with one of our payments (runs shortly after payinvoice)."""
        with self.lock:
            if payment.status != "pending":
                return
            if self._fail_next:
                reason = self._fail_next.pop(0)
                if reason == "no_route":
                    self._fail(payment, "Local", "route not found")
                else:
                    self._fail(payment, "Remote", reason)
            elif self._hang_next:
                self._hang_next -= 1
                self._hung.append(payment)
            elif self.routing_fee_msat(payment.amount_msat) > max_fee_msat:
                self._fail(payment, "Local", "route not found")
            elif payment.amount_msat + self.routing_fee_msat(payment.amount_msat) > self.local_msat:
                self._fail(payment, "Local", "balance too low")
            else:
                self._succeed(payment)

    def new_wallet_address(self) -> str:
        address = script.p2wpkh(WalletKey(os.urandom(32)).get_public_key()).address(REGTEST)
        with self.lock:
            self.wallet_keys.add(address)
        return address

    # --- API endpoints ---------------------------------------------------------------------

    def api_getinfo(self, form: dict[str, str]) -> Any:
        return {
            "version": "0.13.0-fake",
            "nodeId": self.node_id,
            "alias": self.alias,
            "color": "#49daaa",
            "features": {"activated": {}, "unknown": []},
            "chainHash": REGTEST_CHAIN_HASH,
            "network": "regtest",
            "blockHeight": self.block_height,
            "publicAddresses": [],
            "instanceId": "01234567-0123-4567-89ab-0123456789ab",
        }

    def api_usablebalances(self, form: dict[str, str]) -> Any:
        return [
            {
                "remoteNodeId": self.outside_key.public_key.format().hex(),
                "realScid": "150x1x0",
                "aliases": {"localAlias": "0x1"},
                "canSend": self.local_msat,
                "canReceive": self.remote_msat,
                "isPublic": True,
                "isEnabled": True,
            }
        ]

    def api_onchainbalance(self, form: dict[str, str]) -> Any:
        return {
            "confirmed": self.onchain_confirmed_sat,
            "unconfirmed": self.onchain_unconfirmed_sat,
        }

    def api_createinvoice(self, form: dict[str, str]) -> Any:
        description, description_hash = form.get("description"), form.get("descriptionHash")
        if (description is None) == (description_hash is None):
            # Eclair fails the route with a RuntimeException: a 500.
            raise ApiError(500, GENERIC_FAILURE)
        amount = _int_field(form, "amountMsat") if "amountMsat" in form else None
        expiry = _int_field(form, "expireIn") if "expireIn" in form else 3600
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        serialized = sign_invoice(
            key=self.key,
            payment_hash=payment_hash,
            amount_msat=amount,
            description=description,
            description_hash=description_hash,
            expiry_s=expiry,
        )
        created = bolt11.decode(serialized).date
        self.incoming[payment_hash] = Incoming(
            serialized=serialized,
            payment_hash=payment_hash,
            preimage=preimage.hex(),
            amount_msat=amount,
            created_ms=now_ms(),
            expires_ms=(created + expiry) * 1000,
        )
        return invoice_json(serialized)

    def api_getreceivedinfo(self, form: dict[str, str]) -> Any:
        payment_hash = _hash_field(form, "paymentHash")
        incoming = self.incoming.get(payment_hash)
        if incoming is None:
            raise ApiError(404, "Not found")
        if incoming.received_ms is not None:
            status = {
                "type": "received",
                "amount": incoming.received_msat,
                "receivedAt": timestamp_json(incoming.received_ms),
            }
        elif now_ms() > incoming.expires_ms:
            status = {"type": "expired"}
        else:
            status = {"type": "pending"}
        return {
            "invoice": invoice_json(incoming.serialized),
            "paymentPreimage": incoming.preimage,
            "paymentType": "Standard",
            "createdAt": timestamp_json(incoming.created_ms),
            "status": status,
        }

    def api_deleteinvoice(self, form: dict[str, str]) -> Any:
        payment_hash = _hash_field(form, "paymentHash")
        incoming = self.incoming.get(payment_hash)
        if incoming is not None:
            if incoming.received_ms is not None:
                # "Cannot remove a received incoming payment" (IllegalArgumentException)
                raise ApiError(400, GENERIC_FAILURE)
            del self.incoming[payment_hash]
        return f"deleted invoice {payment_hash}"

    def api_audit(self, form: dict[str, str]) -> Any:
        now_s = int(time.time())
        start = _int_field(form, "from") * 1000 if "from" in form else (now_s - 86_400) * 1000
        end = _int_field(form, "to") * 1000 if "to" in form else now_s * 1000
        received = []
        for entry in self.audit_received:
            if any(start <= part["_ms"] < end for part in entry["parts"]):
                parts = [{k: v for k, v in part.items() if k != "_ms"} for part in entry["parts"]]
                received.append(({**entry, "parts": parts}, max(p["_ms"] for p in entry["parts"])))
        received.sort(key=lambda item: item[1])
        return {"sent": [], "received": [entry for entry, _ in received], "relayed": []}

    def api_parseinvoice(self, form: dict[str, str]) -> Any:
        return invoice_json(self._parse_invoice_field(form))

    def _parse_invoice_field(self, form: dict[str, str]) -> str:
        raw = form.get("invoice")
        if raw is None:
            raise ApiError(404, "Request is missing required form field 'invoice'")
        try:
            bolt11.decode(raw)
        except Exception as exc:
            raise ApiError(400, f"The form field 'invoice' was malformed:\n{exc}") from None
        return raw

    def api_payinvoice(self, form: dict[str, str]) -> Any:
        serialized = self._parse_invoice_field(form)
        decoded = bolt11.decode(serialized)
        if "amountMsat" in form:
            amount = _int_field(form, "amountMsat")
        elif decoded.amount_msat:
            amount = int(decoded.amount_msat)
        else:
            raise ApiError(
                400,
                "The form field 'invoice' was malformed:\nThe invoice must have an amount or you "
                "need to specify one using the field 'amountMsat'",
            )
        flat_msat = _int_field(form, "maxFeeFlatSat") * 1000 if "maxFeeFlatSat" in form else 21_000
        pct = float(form["maxFeePct"]) if "maxFeePct" in form else 3.0
        max_fee = max(flat_msat, int(amount * pct / 100))
        payment_id = str(uuid.uuid4())
        payment = Outgoing(
            id=payment_id,
            parent_id=payment_id,
            payment_hash=decoded.payment_hash,
            amount_msat=amount,
            recipient_node_id=decoded.payee,
            created_ms=now_ms(),
            serialized=serialized,
        )
        self.outgoing.append(payment)
        if form.get("blocking") == "true":
            self._route(payment, max_fee)
            return self._payment_event(payment)
        timer = threading.Timer(self.settle_delay_s, self._route, args=(payment, max_fee))
        timer.daemon = True
        timer.start()
        return payment_id

    def _payment_event(self, payment: Outgoing) -> Any:
        if payment.status == "sent":
            return {
                "type": "payment-sent",
                "id": payment.id,
                "paymentHash": payment.payment_hash,
                "paymentPreimage": payment.preimage,
                "recipientAmount": payment.amount_msat,
                "recipientNodeId": payment.recipient_node_id,
                "parts": [],
                "fees": payment.fee_msat,
            }
        return {
            "type": "payment-failed",
            "id": payment.id,
            "paymentHash": payment.payment_hash,
            "failures": [],
        }

    def api_getsentinfo(self, form: dict[str, str]) -> Any:
        if "id" in form:
            selected = [p for p in self.outgoing if p.parent_id == form["id"]]
        else:
            payment_hash = _hash_field(form, "paymentHash")
            selected = [p for p in self.outgoing if p.payment_hash == payment_hash]
        return [self._outgoing_json(p) for p in selected]

    def _outgoing_json(self, payment: Outgoing) -> dict[str, Any]:
        if payment.status == "sent":
            status: dict[str, Any] = {
                "type": "sent",
                "paymentPreimage": payment.preimage,
                "feesPaid": payment.fee_msat,
                "route": [],
                "completedAt": timestamp_json(payment.completed_ms),
            }
        elif payment.status == "failed":
            failure_type, message = payment.failure
            status = {
                "type": "failed",
                "failures": [
                    {"failureType": failure_type, "failureMessage": message, "failedRoute": []}
                ],
                "completedAt": timestamp_json(payment.completed_ms),
            }
        else:
            status = {"type": "pending"}
        return {
            "id": payment.id,
            "parentId": payment.parent_id,
            "paymentHash": payment.payment_hash,
            "paymentType": "Standard",
            "amount": payment.amount_msat,
            "recipientAmount": payment.amount_msat,
            "recipientNodeId": payment.recipient_node_id,
            "createdAt": timestamp_json(payment.created_ms),
            "invoice": invoice_json(payment.serialized),
            "status": status,
        }

    def api_getnewaddress(self, form: dict[str, str]) -> Any:
        return self.new_wallet_address()

    def api_sendonchain(self, form: dict[str, str]) -> Any:
        address = form.get("address", "")
        amount = _int_field(form, "amountSatoshis")
        if "feeRatePerByte" in form:
            rate = _int_field(form, "feeRatePerByte")
        elif "confirmationTarget" in form:
            target = _int_field(form, "confirmationTarget")
            rate = 20 if target < 3 else 5 if target > 6 else 10
        else:
            raise ApiError(400, GENERIC_FAILURE)
        try:
            spk = script.address_to_scriptpubkey(address)
        except Exception:
            raise ApiError(400, GENERIC_FAILURE) from None
        if not address.lower().startswith("bcrt1") or not spk:
            raise ApiError(400, GENERIC_FAILURE)  # "invalid address" for this chain
        fee = rate * 141  # one P2WPKH input, payment and change outputs
        if amount + fee > self.onchain_confirmed_sat:
            raise ApiError(500, GENERIC_FAILURE)  # bitcoind: insufficient funds
        txid = os.urandom(32).hex()
        rows = [(address, -amount, -fee)]
        self.onchain_confirmed_sat -= amount + fee
        if address in self.wallet_keys:
            rows.append((address, amount, 0))
            self.onchain_unconfirmed_sat += amount
        self.wallet_txs.append(WalletTx(txid=txid, rows=rows, time_s=int(time.time())))
        return txid

    def api_onchaintransactions(self, form: dict[str, str]) -> Any:
        count = _int_field(form, "count") if "count" in form else 10
        skip = _int_field(form, "skip") if "skip" in form else 0
        rows = []
        for tx in self.wallet_txs:  # oldest first, as bitcoind lists them
            confirmations = 0 if tx.height is None else self.block_height - tx.height + 1
            for address, amount, fee in tx.rows:
                rows.append(
                    {
                        "address": address,
                        "amount": amount,
                        "fees": fee,
                        "confirmations": confirmations,
                        "txid": tx.txid,
                        "timestamp": tx.time_s,
                    }
                )
        # listtransactions "*" count skip: the `count` most recent after skipping `skip`;
        # Eclair then reverses them (newest first).
        end = len(rows) - skip
        page = rows[max(end - count, 0) : max(end, 0)]
        return list(reversed(page))


def _int_field(form: dict[str, str], name: str) -> int:
    try:
        return int(form[name])
    except (KeyError, ValueError):
        raise ApiError(
            400,
            f"The form field '{name}' was malformed:\n'{form.get(name)}' is not a valid 64-bit signed integer value",
        ) from None


def _hash_field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    try:
        if len(bytes.fromhex(value)) == 32:
            return value.lower()
    except ValueError:
        pass
    raise ApiError(400, f"The form field '{name}' was malformed:\ninvalid 32-byte hex")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    node: FakeEclairNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like akka-http
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any, *, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._reply(405, {"error": "HTTP method not allowed, supported methods: POST"})

    def do_POST(self) -> None:
        node = self.server.node
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length).decode()
        endpoint = self.path.strip("/")
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            self._reply(
                401,
                {
                    "error": "The resource requires authentication, which was not supplied with the request"
                },
                headers={"WWW-Authenticate": 'Basic realm="Access restricted"'},
            )
            return
        _user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if password != node.password:
            self._reply(
                401,
                {"error": "The supplied authentication is invalid"},
                headers={"WWW-Authenticate": 'Basic realm="Access restricted"'},
            )
            return
        form = {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}
        handler = getattr(node, f"api_{endpoint}", None)
        if handler is None or not endpoint.isalpha():
            self._reply(404, {"error": "The requested resource could not be found."})
            return
        node.requests.append(endpoint)
        try:
            with node.lock:
                injected = node.injected_errors.pop(endpoint, None)
                if injected is not None:
                    raise ApiError(*injected)
                status, body = 200, handler(form)
        except ApiError as exc:
            status, body = exc.status, {"error": exc.message}
        # Answer late (after acting), e.g. to test timeouts after a payment was started.
        if node.response_delay_s and (not node.slow_endpoints or endpoint in node.slow_endpoints):
            time.sleep(node.response_delay_s)
        with contextlib.suppress(OSError):  # the client gave up or the server was stopped
            self._reply(status, body)
