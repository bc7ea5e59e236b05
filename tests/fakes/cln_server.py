"""An in-process Core Lightning node speaking CLN's JSON-RPC 2.0 on a unix socket.

Wire format as lightningd speaks it to pyln-client: the client writes one JSON request object
(no delimiter) per connection, lightningd answers with one JSON object followed by "\\n\\n".
Method names, parameters, result fields and error codes follow CLN's RPC reference; unknown
parameters are refused the way CLN refuses them, so a backend sending a wrong name fails here.

The node signs real regtest BOLT 11 invoices, keeps invoices by label with a pay_index, pays
outside invoices for a routing fee (or fails / hangs them on request), and has an on-chain
wallet of real regtest addresses and transactions (embit) that blocks confirm.
`FakeClnServer` is also the contract's `World`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bolt11 as bolt11_lib
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from coincurve import PrivateKey
from embit import ec
from embit.networks import NETWORKS
from embit.script import Script, address_to_scriptpubkey, p2tr, p2wpkh
from embit.transaction import Transaction, TransactionInput, TransactionOutput

REGTEST = NETWORKS["regtest"]
ROUTING_BASE_FEE_MSAT = 1
ROUTING_FEE_PPM = 1_000


class RpcFailure(Exception):
    """Answer the request with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class OutsidePaymentFailed(Exception):
    """The outside payer could not pay (unknown, cancelled, expired or paid invoice)."""


# Parameter names per method, in CLN's positional order.
PARAMS: dict[str, list[str]] = {
    "getinfo": [],
    "listfunds": ["spent"],
    "invoice": [
        "amount_msat",
        "label",
        "description",
        "expiry",
        "fallbacks",
        "preimage",
        "exposeprivatechannels",
        "cltv",
        "deschashonly",
    ],
    "listinvoices": ["label", "invstring", "payment_hash", "offer_id", "index", "start", "limit"],
    "delinvoice": ["label", "status", "desconly"],
    "waitanyinvoice": ["lastpay_index", "timeout"],
    "decode": ["string"],
    "pay": [
        "bolt11",
        "amount_msat",
        "label",
        "riskfactor",
        "maxfeepercent",
        "retry_for",
        "maxdelay",
        "exemptfee",
        "localinvreqid",
        "exclude",
        "maxfee",
        "description",
        "partial_msat",
    ],
    "listpays": ["bolt11", "payment_hash", "status", "index", "start", "limit"],
    "newaddr": ["addresstype"],
    "feerates": ["style"],
    "multiwithdraw": ["outputs", "feerate", "minconf", "utxos"],
    "listtransactions": [],
    "datastore": ["key", "string", "hex", "mode", "generation"],
    "listdatastore": ["key"],
    "deldatastore": ["key", "generation"],
}


@dataclass
class Invoice:
    label: str
    bolt11: str
    payment_hash: str
    preimage: str
    amount_msat: int | None
    description: str
    expires_at: int
    created_index: int
    pay_index: int | None = None
    amount_received_msat: int = 0
    paid_at: int | None = None

    def status(self) -> str:
        if self.pay_index is not None:
            return "paid"
        return "expired" if time.time() > self.expires_at else "unpaid"

    def as_cln(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "label": self.label,
            "bolt11": self.bolt11,
            "payment_hash": self.payment_hash,
            "status": self.status(),
            "description": self.description,
            "expires_at": self.expires_at,
            "created_index": self.created_index,
        }
        if self.amount_msat is not None:
            entry["amount_msat"] = self.amount_msat
        if self.pay_index is not None:
            entry.update(
                pay_index=self.pay_index,
                amount_received_msat=self.amount_received_msat,
                paid_at=self.paid_at,
                payment_preimage=self.preimage,
                updated_index=self.pay_index,
            )
        return entry


@dataclass
class Payment:
    bolt11: str
    payment_hash: str
    destination: str
    amount_msat: int
    fee_msat: int
    created_at: int
    status: str = "pending"  # pending | complete | failed
    preimage: str | None = None
    completed_at: int | None = None

    def as_cln(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "bolt11": self.bolt11,
            "destination": self.destination,
            "payment_hash": self.payment_hash,
            "status": self.status,
            "created_at": self.created_at,
            "amount_msat": self.amount_msat,
            "amount_sent_msat": self.amount_msat + self.fee_msat,
        }
        if self.status == "complete":
            entry.update(preimage=self.preimage, completed_at=self.completed_at, number_of_parts=1)
        return entry


@dataclass
class WalletTx:
    tx: Transaction
    blockheight: int | None = None
    txindex: int = 0


@dataclass
class Utxo:
    txid: str
    vout: int
    amount_sat: int
    script: bytes
    spent: bool = False
    blockheight: int | None = None


@dataclass
class Hooks:
    """Test knobs on the next call of a method."""

    delay_s: dict[str, float] = field(default_factory=dict)
    drop_before: set[str] = field(default_factory=set)  # close without running the call
    drop_after: set[str] = field(default_factory=set)  # run the call, then close unanswered
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)


def _encode_invoice(
    *,
    key: PrivateKey,
    payment_hash: str,
    amount_msat: int | None,
    description: str | None,
    description_hash: str | None,
    expiry: int,
    created_at: int,
) -> str:
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash)
    tags.add(TagChar.payment_secret, secrets.token_hex(32))
    if description_hash is not None:
        tags.add(TagChar.description_hash, description_hash)
    else:
        tags.add(TagChar.description, description or "")
    tags.add(TagChar.expire_time, expiry)
    tags.add(TagChar.min_final_cltv_expiry, 18)
    invoice = Bolt11(
        currency="bcrt",
        date=created_at,
        tags=tags,
        amount_msat=MilliSatoshi(amount_msat) if amount_msat else None,
    )
    return bolt11_lib.encode(invoice, private_key=key.secret.hex())


def _output_vbytes(script: bytes) -> int:
    return 8 + 1 + len(script)


class FakeClnServer:
    """The node (state + RPC methods), its unix-socket server and the outside world."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="cln-")  # short: AF_UNIX paths max ~108 bytes
        self.socket_path = os.path.join(self._dir, "lightning-rpc")
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.hooks = Hooks()
        self.calls: list[str] = []

        self.node_key = PrivateKey()
        self.node_id = self.node_key.public_key.format().hex()
        self.blockheight = 110
        self.synced = True
        self.invoices: dict[str, Invoice] = {}  # by label
        self.next_created_index = 1
        self.next_pay_index = 1
        self.payments: list[Payment] = []
        self.channel_capacity_msat = 10_000_000_000
        self.channel_local_msat = 5_000_000_000
        self.datastore: dict[tuple[str, ...], tuple[str, int]] = {}
        self.feerate_perkb = {2: 20_000, 6: 10_000, 12: 5_000, 100: 1_000}

        self.outside_key = PrivateKey()
        self.outside_preimages: dict[str, str] = {}
        self._fail_next: str | None = None
        self._hang_next = False
        self._hung: dict[str, bool | None] = {}  # payment_hash -> resolution

        self.txs: dict[str, WalletTx] = {}
        self.utxos: dict[tuple[str, int], Utxo] = {}
        self.our_scripts: set[bytes] = set()
        self._fund_wallet()

        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._running = False
        self.start()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        with self.lock:
            if self._running:
                return
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.socket_path)
            listener.listen(16)
            self._listener = listener
            self._running = True
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self.lock:
            if not self._running:
                return
            self._running = False
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
            self.changed.notify_all()
        assert listener is not None
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.stop()
        with self.lock:
            for payment_hash in self._hung:
                self._hung[payment_hash] = False
            self.changed.notify_all()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                if not self._running:
                    conn.close()
                    return
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        decoder = json.JSONDecoder()
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while buffer.strip():
                    text = buffer.decode().lstrip()
                    try:
                        request, end = decoder.raw_decode(text)
                    except json.JSONDecodeError:
                        break  # incomplete: read more
                    buffer = text[end:].encode()
                    reply = self._handle(request, conn)
                    if reply is None:
                        return  # hooks: close without answering
                    conn.sendall(json.dumps(reply).encode() + b"\n\n")
        except OSError:
            return
        finally:
            with self.lock:
                self._connections.discard(conn)
            conn.close()

    def _handle(self, request: dict[str, Any], conn: socket.socket) -> dict[str, Any] | None:
        method = request.get("method", "")
        request_id = request.get("id")
        self.calls.append(method)
        with self.lock:
            delay = self.hooks.delay_s.pop(method, 0.0)
            drop_before = method in self.hooks.drop_before
            drop_after = method in self.hooks.drop_after
            self.hooks.drop_before.discard(method)
            self.hooks.drop_after.discard(method)
            injected = self.hooks.errors.pop(method, None)
        if delay:
            time.sleep(delay)
        if drop_before:
            return None
        try:
            if request.get("jsonrpc") != "2.0" or request_id is None:
                raise RpcFailure(-32600, "Expected jsonrpc 2.0 request with an id")
            if injected is not None:
                raise RpcFailure(*injected)
            handler: Callable[..., Any] | None = getattr(self, f"rpc_{method}", None)
            if handler is None or method not in PARAMS:
                raise RpcFailure(-32601, f"Unknown command '{method}'")
            params = self._bind(method, request.get("params", {}))
            result = handler(**params)
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        except RpcFailure as failure:
            error: dict[str, Any] = {"code": failure.code, "message": failure.message}
            if failure.data is not None:
                error["data"] = failure.data
            reply = {"jsonrpc": "2.0", "id": request_id, "error": error}
        return None if drop_after else reply

    @staticmethod
    def _bind(method: str, params: Any) -> dict[str, Any]:
        names = PARAMS[method]
        if isinstance(params, list):
            if len(params) > len(names):
                raise RpcFailure(-32602, f"too many parameters: got {len(params)}")
            return dict(zip(names, params, strict=False))
        for name in params:
            if name not in names:
                raise RpcFailure(
                    -32602,
                    f"unknown parameter: {name}, this may be caused by a failure to "
                    "autodetect key=value-style parameters.",
                )
        return dict(params)

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _msat_param(name: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.endswith("msat") and value[:-4].isdigit():
            return int(value[:-4])
        raise RpcFailure(-32602, f"{name}: should be a millisatoshi amount: invalid token")

    @staticmethod
    def _decode(name: str, bolt11: str) -> Bolt11:
        try:
            decoded = bolt11_lib.decode(bolt11)
        except Exception as exc:
            raise RpcFailure(-32602, f"{name}: Invalid bolt11: {type(exc).__name__}") from None
        if decoded.currency != "bcrt":
            raise RpcFailure(-32602, f"{name}: Invalid bolt11: Prefix bc is for other network")
        return decoded

    def _invoice_by_hash(self, payment_hash: str) -> Invoice | None:
        return next((i for i in self.invoices.values() if i.payment_hash == payment_hash), None)

    def _new_script(self, kind: str = "bech32") -> bytes:
        key = ec.PrivateKey(secrets.token_bytes(32))
        script = (p2tr if kind == "p2tr" else p2wpkh)(key.get_public_key()).data
        self.our_scripts.add(script)
        return script

    def _add_tx(self, tx: Transaction, blockheight: int | None = None) -> str:
        txid = tx.txid().hex()
        self.txs[txid] = WalletTx(tx=tx, blockheight=blockheight, txindex=len(self.txs))
        for vout, out in enumerate(tx.vout):
            if out.script_pubkey.data in self.our_scripts:
                self.utxos[(txid, vout)] = Utxo(
                    txid=txid,
                    vout=vout,
                    amount_sat=out.value,
                    script=out.script_pubkey.data,
                    blockheight=blockheight,
                )
        return txid

    def _outside_tx(self, outputs: list[tuple[bytes, int]]) -> Transaction:
        vin = [TransactionInput(secrets.token_bytes(32), 0)]
        vout = [TransactionOutput(amount, Script(script)) for script, amount in outputs]
        return Transaction(version=2, vin=vin, vout=vout, locktime=0)

    def _fund_wallet(self) -> None:
        outputs = [(self._new_script(), 1_000_000), (self._new_script(), 2_000_000)]
        self._add_tx(self._outside_tx(outputs), blockheight=101)

    # --- RPC: info -----------------------------------------------------------------------

    def rpc_getinfo(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.node_id,
            "alias": "fake-cln",
            "color": "02aabb",
            "num_peers": 1,
            "num_pending_channels": 0,
            "num_active_channels": 1,
            "num_inactive_channels": 0,
            "address": [],
            "binding": [{"type": "ipv4", "address": "127.0.0.1", "port": 19846}],
            "version": "v24.11",
            "blockheight": self.blockheight,
            "network": "regtest",
            "fees_collected_msat": 0,
            "lightning-dir": self._dir,
            "our_features": {"init": "08a0000a8a5961", "node": "88a0000a8a5961"},
        }
        if not self.synced:
            info["warning_bitcoind_sync"] = "Bitcoind is not up-to-date with network."
        return info

    def rpc_listfunds(self, spent: bool = False) -> dict[str, Any]:
        outputs = []
        with self.lock:
            for utxo in self.utxos.values():
                if utxo.spent and not spent:
                    continue
                status = (
                    "spent"
                    if utxo.spent
                    else ("confirmed" if utxo.blockheight is not None else "unconfirmed")
                )
                entry = {
                    "txid": utxo.txid,
                    "output": utxo.vout,
                    "amount_msat": utxo.amount_sat * 1000,
                    "scriptpubkey": utxo.script.hex(),
                    "address": Script(utxo.script).address(REGTEST),
                    "status": status,
                    "reserved": False,
                }
                if utxo.blockheight is not None:
                    entry["blockheight"] = utxo.blockheight
                outputs.append(entry)
            channel = {
                "peer_id": self.outside_key.public_key.format().hex(),
                "connected": True,
                "state": "CHANNELD_NORMAL",
                "channel_id": "aa" * 32,
                "short_channel_id": "101x1x0",
                "our_amount_msat": self.channel_local_msat,
                "amount_msat": self.channel_capacity_msat,
                "funding_txid": "bb" * 32,
                "funding_output": 0,
            }
        return {"outputs": outputs, "channels": [channel]}

    # --- RPC: invoices -------------------------------------------------------------------

    def rpc_invoice(
        self,
        amount_msat: Any,
        label: Any,
        description: str,
        expiry: int = 604_800,
        fallbacks: Any = None,
        preimage: str | None = None,
        exposeprivatechannels: Any = None,
        cltv: int | None = None,
        deschashonly: bool = False,
    ) -> dict[str, Any]:
        amount = None if amount_msat == "any" else self._msat_param("amount_msat", amount_msat)
        if not isinstance(description, str):
            raise RpcFailure(-32602, "description: should be a string")
        label = str(label)
        with self.lock:
            if label in self.invoices:
                raise RpcFailure(900, "Duplicate label", self.invoices[label].as_cln())
            preimage = preimage or secrets.token_hex(32)
            payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
            now = int(time.time())
            desc_hash = hashlib.sha256(description.encode()).hexdigest() if deschashonly else None
            bolt11 = _encode_invoice(
                key=self.node_key,
                payment_hash=payment_hash,
                amount_msat=amount,
                description=None if deschashonly else description,
                description_hash=desc_hash,
                expiry=int(expiry),
                created_at=now,
            )
            invoice = Invoice(
                label=label,
                bolt11=bolt11,
                payment_hash=payment_hash,
                preimage=preimage,
                amount_msat=amount,
                description=description,
                expires_at=now + int(expiry),
                created_index=self.next_created_index,
            )
            self.next_created_index += 1
            self.invoices[label] = invoice
        return {
            "payment_hash": payment_hash,
            "expires_at": invoice.expires_at,
            "bolt11": bolt11,
            "payment_secret": secrets.token_hex(32),
            "created_index": invoice.created_index,
        }

    def rpc_listinvoices(
        self,
        label: Any = None,
        invstring: str | None = None,
        payment_hash: str | None = None,
        offer_id: str | None = None,
        index: str | None = None,
        start: int | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        if sum(x is not None for x in (label, invstring, payment_hash, offer_id)) > 1:
            raise RpcFailure(
                -32602, "Can only specify one of {label}, {invstring}, {payment_hash} or {offer_id}"
            )
        if payment_hash is not None and (
            len(payment_hash) != 64 or any(c not in "0123456789abcdef" for c in payment_hash)
        ):
            raise RpcFailure(-32602, "payment_hash: should be a 32 byte hex value")
        with self.lock:
            found = list(self.invoices.values())
            if label is not None:
                found = [i for i in found if i.label == str(label)]
            if payment_hash is not None:
                found = [i for i in found if i.payment_hash == payment_hash]
            if invstring is not None:
                found = [i for i in found if i.bolt11 == invstring]
            return {"invoices": [i.as_cln() for i in found]}

    def rpc_delinvoice(self, label: Any, status: str, desconly: bool = False) -> dict[str, Any]:
        with self.lock:
            invoice = self.invoices.get(str(label))
            if invoice is None:
                raise RpcFailure(905, "Unknown invoice")
            actual = invoice.status()
            if actual != status:
                raise RpcFailure(
                    906,
                    f"Invoice status is {actual} not {status}",
                    {"current_status": actual, "expected_status": status},
                )
            del self.invoices[invoice.label]
            return invoice.as_cln()

    def rpc_waitanyinvoice(
        self, lastpay_index: int = 0, timeout: int | None = None
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                paid = sorted(
                    (i for i in self.invoices.values() if (i.pay_index or 0) > lastpay_index),
                    key=lambda i: i.pay_index or 0,
                )
                if paid:
                    return paid[0].as_cln()
                if not self._running:
                    raise ConnectionAbortedError  # the socket is gone; the caller sees EOF
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RpcFailure(904, "Timed out")
                self.changed.wait(timeout=remaining)

    # --- RPC: paying ---------------------------------------------------------------------

    def rpc_decode(self, string: str) -> dict[str, Any]:
        decoded = self._decode("string", string)
        result: dict[str, Any] = {
            "type": "bolt11 invoice",
            "valid": True,
            "currency": decoded.currency,
            "created_at": decoded.date,
            "expiry": decoded.expiry,
            "payee": decoded.payee,
            "payment_hash": decoded.payment_hash,
            "signature": decoded.signature.hex if decoded.signature else "",
            "min_final_cltv_expiry": decoded.min_final_cltv_expiry,
            "payment_secret": decoded.payment_secret,
        }
        if decoded.amount_msat:
            result["amount_msat"] = int(decoded.amount_msat)
        if decoded.description is not None:
            result["description"] = decoded.description
        if decoded.description_hash is not None:
            result["description_hash"] = decoded.description_hash
        return result

    def rpc_pay(
        self,
        bolt11: str,
        amount_msat: Any = None,
        label: str | None = None,
        riskfactor: Any = None,
        maxfeepercent: Any = None,
        retry_for: int = 60,
        maxdelay: Any = None,
        exemptfee: Any = None,
        localinvreqid: Any = None,
        exclude: Any = None,
        maxfee: Any = None,
        description: str | None = None,
        partial_msat: Any = None,
    ) -> dict[str, Any]:
        decoded = self._decode("bolt11", bolt11)
        if maxfee is not None and (maxfeepercent is not None or exemptfee is not None):
            raise RpcFailure(-32602, "Cannot mix maxfee with maxfeepercent or exemptfee")
        if decoded.amount_msat:
            if amount_msat is not None:
                raise RpcFailure(-32602, "amount_msat parameter unnecessary")
            amount = int(decoded.amount_msat)
        else:
            if amount_msat is None:
                raise RpcFailure(-32602, "amount_msat parameter required")
            amount = self._msat_param("amount_msat", amount_msat)
        if decoded.has_expired():
            raise RpcFailure(207, "Invoice expired")
        payment_hash = decoded.payment_hash
        fee = self.routing_fee_msat(amount)
        with self.lock:
            previous = [p for p in self.payments if p.payment_hash == payment_hash]
            done = next((p for p in previous if p.status == "complete"), None)
            if done is not None:
                return self._pay_result(done)
            if any(p.status == "pending" for p in previous):
                raise RpcFailure(200, "Payment in progress")
            payment = Payment(
                bolt11=bolt11,
                payment_hash=payment_hash,
                destination=decoded.payee or "",
                amount_msat=amount,
                fee_msat=fee,
                created_at=int(time.time()),
            )
            fail, self._fail_next = self._fail_next, None
            hang, self._hang_next = self._hang_next, False
            if maxfee is not None and fee > self._msat_param("maxfee", maxfee):
                # CLN checks the route's fee against the budget before sending anything.
                raise RpcFailure(
                    206, "Fee exceeds our fee budget", {"fee_msat": fee, "maxfee_msat": maxfee}
                )
            if fail is not None or amount + fee > self.channel_local_msat:
                # Attempts went out and every one came back failed.
                payment.status = "failed"
                self.payments.append(payment)
                raise RpcFailure(205, "Ran out of routes to try after 3 attempts: see `paystatus`")
            self.payments.append(payment)
            if hang:
                # The HTLC is stuck downstream; `pay` returns only when it resolves.
                self._hung[payment_hash] = None
                while self._hung.get(payment_hash) is None:
                    self.changed.wait()
                self._hung.pop(payment_hash)
            else:
                preimage = self.outside_preimages.get(payment_hash)
                if preimage is None:
                    payment.status = "failed"
                else:
                    self._complete(payment, preimage)
            if payment.status != "complete":
                payment.status = "failed"
                raise RpcFailure(
                    203, "failed: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS (reply from remote)"
                )
            return self._pay_result(payment)

    def _complete(self, payment: Payment, preimage: str) -> None:
        payment.status = "complete"
        payment.preimage = preimage
        payment.completed_at = int(time.time())
        self.channel_local_msat -= payment.amount_msat + payment.fee_msat

    @staticmethod
    def _pay_result(payment: Payment) -> dict[str, Any]:
        return {
            "destination": payment.destination,
            "payment_hash": payment.payment_hash,
            "created_at": float(payment.created_at),
            "parts": 1,
            "amount_msat": payment.amount_msat,
            "amount_sent_msat": payment.amount_msat + payment.fee_msat,
            "payment_preimage": payment.preimage,
            "status": "complete",
        }

    def rpc_listpays(
        self,
        bolt11: str | None = None,
        payment_hash: str | None = None,
        status: str | None = None,
        index: str | None = None,
        start: int | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            pays = [
                p
                for p in self.payments
                if (payment_hash is None or p.payment_hash == payment_hash)
                and (bolt11 is None or p.bolt11 == bolt11)
                and (status is None or p.status == status)
            ]
            return {"pays": [p.as_cln() for p in pays]}

    # --- RPC: on chain -------------------------------------------------------------------

    def rpc_newaddr(self, addresstype: str = "bech32") -> dict[str, Any]:
        if addresstype not in ("bech32", "p2tr", "all"):
            raise RpcFailure(-32602, "addresstype: Invalid address type")
        with self.lock:
            result = {}
            for kind in ("bech32", "p2tr") if addresstype == "all" else (addresstype,):
                result[kind] = Script(self._new_script(kind)).address(REGTEST)
            return result

    def _perkb(self, blocks: int) -> int:
        for count in sorted(self.feerate_perkb):
            if count >= blocks:
                return self.feerate_perkb[count]
        return min(self.feerate_perkb.values())

    def rpc_feerates(self, style: str) -> dict[str, Any]:
        if style not in ("perkb", "perkw"):
            raise RpcFailure(-32602, "style: should be 'perkw' or 'perkb'")
        scale = 1 if style == "perkb" else 0.25

        def rate(value: int) -> int:
            return int(value * scale)

        rates = {
            "opening": rate(self._perkb(12)),
            "mutual_close": rate(self._perkb(100)),
            "unilateral_close": rate(self._perkb(6)),
            "penalty": rate(self._perkb(12)),
            "min_acceptable": rate(1_000),
            "max_acceptable": rate(100_000),
            "floor": rate(1_000),
            "estimates": [
                {"blockcount": n, "feerate": rate(r), "smoothed_feerate": rate(r)}
                for n, r in sorted(self.feerate_perkb.items())
            ],
        }
        return {
            style: rates,
            "onchain_fee_estimates": {
                "opening_channel_satoshis": 5_000,
                "mutual_close_satoshis": 3_000,
                "unilateral_close_satoshis": 6_000,
                "htlc_timeout_satoshis": 2_000,
                "htlc_success_satoshis": 2_000,
            },
        }

    @staticmethod
    def _parse_feerate(feerate: Any, perkb_for: Callable[[int], int]) -> int:
        named = {"urgent": 2, "normal": 6, "slow": 100, "minimum": 100}
        if feerate is None:
            return perkb_for(6)
        text = str(feerate)
        if text in named:
            return perkb_for(named[text])
        for suffix, factor in (("perkb", 1), ("perkw", 4), ("", 1)):
            if text.endswith(suffix) and text[: len(text) - len(suffix)].isdigit():
                return int(text[: len(text) - len(suffix)]) * factor
        raise RpcFailure(-32602, f"feerate: Invalid feerate: {text}")

    @staticmethod
    def _address_script(address: str) -> bytes:
        try:
            script = address_to_scriptpubkey(address)
            if Script(script.data).address(REGTEST) != (
                address.lower() if address.lower().startswith("bcrt1") else address
            ):
                raise ValueError("wrong network")
        except Exception:
            raise RpcFailure(
                -32602,
                "Could not parse destination address, destination should be a valid address",
            ) from None
        return script.data

    def rpc_multiwithdraw(
        self, outputs: Any, feerate: Any = None, minconf: int = 1, utxos: Any = None
    ) -> dict[str, Any]:
        if not isinstance(outputs, list) or not outputs:
            raise RpcFailure(-32602, "outputs: should be an array")
        wanted: list[tuple[bytes, int]] = []
        for item in outputs:
            if not isinstance(item, dict) or len(item) != 1:
                raise RpcFailure(-32602, "outputs: should be an object with a single member")
            ((address, amount),) = item.items()
            if not isinstance(amount, int) or amount <= 0:
                raise RpcFailure(-32602, "outputs: amount should be a satoshi amount")
            if amount < 546:
                raise RpcFailure(302, "Output would be dust")
            wanted.append((self._address_script(address), amount))
        perkb = self._parse_feerate(feerate, self._perkb)
        total = sum(amount for _, amount in wanted)
        with self.lock:
            spendable = sorted(
                (
                    u
                    for u in self.utxos.values()
                    if not u.spent
                    and u.blockheight is not None
                    and self.blockheight - u.blockheight + 1 >= minconf
                ),
                key=lambda u: -u.amount_sat,
            )
            chosen: list[Utxo] = []
            change_script = self._new_script()
            base = 11 + 43 + sum(_output_vbytes(s) for s, _ in wanted)
            fee = 0
            for utxo in spendable:
                chosen.append(utxo)
                fee = math.ceil((base + 68 * len(chosen)) * perkb / 1000)
                if sum(u.amount_sat for u in chosen) >= total + fee:
                    break
            available = sum(u.amount_sat for u in chosen)
            if available < total + fee:
                raise RpcFailure(
                    301,
                    f"Could not afford {total}sat using all {len(spendable)} available UTXOs: "
                    f"{total + fee - available}sat short",
                )
            vin = [TransactionInput(bytes.fromhex(u.txid), u.vout) for u in chosen]
            vout = [TransactionOutput(amount, Script(script)) for script, amount in wanted]
            change = available - total - fee
            if change >= 546:
                vout.append(TransactionOutput(change, Script(change_script)))
            tx = Transaction(version=2, vin=vin, vout=vout, locktime=self.blockheight)
            for utxo in chosen:
                utxo.spent = True
            txid = self._add_tx(tx)
        return {"tx": tx.serialize().hex(), "txid": txid}

    def rpc_listtransactions(self) -> dict[str, Any]:
        with self.lock:
            return {
                "transactions": [
                    {
                        "hash": txid,
                        "rawtx": wtx.tx.serialize().hex(),
                        "blockheight": wtx.blockheight or 0,
                        "txindex": wtx.txindex if wtx.blockheight else 0,
                        "locktime": wtx.tx.locktime,
                        "version": wtx.tx.version,
                        "inputs": [
                            {"txid": i.txid.hex(), "index": i.vout, "sequence": i.sequence}
                            for i in wtx.tx.vin
                        ],
                        "outputs": [
                            {
                                "index": n,
                                "amount_msat": o.value * 1000,
                                "scriptPubKey": o.script_pubkey.data.hex(),
                            }
                            for n, o in enumerate(wtx.tx.vout)
                        ],
                    }
                    for txid, wtx in self.txs.items()
                ]
            }

    # --- RPC: datastore ------------------------------------------------------------------

    @staticmethod
    def _key(key: Any) -> tuple[str, ...]:
        if isinstance(key, str):
            return (key,)
        if isinstance(key, list) and key and all(isinstance(k, str) for k in key):
            return tuple(key)
        raise RpcFailure(-32602, "key: should be an array of strings")

    def _ds_entry(self, key: tuple[str, ...]) -> dict[str, Any]:
        value, generation = self.datastore[key]
        return {
            "key": list(key),
            "generation": generation,
            "hex": value.encode().hex(),
            "string": value,
        }

    def rpc_datastore(
        self,
        key: Any,
        string: str | None = None,
        hex: str | None = None,
        mode: str = "must-create",
        generation: int | None = None,
    ) -> dict[str, Any]:
        path = self._key(key)
        value = string if string is not None else bytes.fromhex(hex or "").decode()
        with self.lock:
            exists = path in self.datastore
            if mode == "must-create" and exists:
                raise RpcFailure(1202, "already exists")
            if mode == "must-replace" and not exists:
                raise RpcFailure(1203, "does not exist")
            if mode not in ("must-create", "must-replace", "create-or-replace"):
                raise RpcFailure(-32602, f"mode: unsupported mode {mode}")
            if any(k[: len(path)] == path and len(k) > len(path) for k in self.datastore):
                raise RpcFailure(1205, "key has children")
            old_generation = self.datastore[path][1] if exists else -1
            self.datastore[path] = (value, old_generation + 1)
            return self._ds_entry(path)

    def rpc_listdatastore(self, key: Any = None) -> dict[str, Any]:
        path = self._key(key) if key is not None else ()
        with self.lock:
            if path in self.datastore:
                return {"datastore": [self._ds_entry(path)]}
            # Otherwise the next level down: leaves with their values, inner keys bare.
            children: dict[tuple[str, ...], dict[str, Any]] = {}
            for full in sorted(self.datastore):
                if full[: len(path)] != path or len(full) <= len(path):
                    continue
                child = full[: len(path) + 1]
                children[child] = (
                    self._ds_entry(child) if child in self.datastore else {"key": list(child)}
                )
            return {"datastore": list(children.values())}

    def rpc_deldatastore(self, key: Any, generation: int | None = None) -> dict[str, Any]:
        path = self._key(key)
        with self.lock:
            if path not in self.datastore:
                raise RpcFailure(1200, "does not exist")
            entry = self._ds_entry(path)
            del self.datastore[path]
            return entry

    # --- the outside world (contract `World`) --------------------------------------------

    def pay_from_outside(self, bolt11: str, *, amount_msat: int | None = None) -> None:
        decoded = bolt11_lib.decode(bolt11)
        with self.lock:
            if not self._running:
                raise OutsidePaymentFailed("node offline")
            invoice = self._invoice_by_hash(decoded.payment_hash)
            if invoice is None or invoice.status() != "unpaid":
                raise OutsidePaymentFailed("incorrect_or_unknown_payment_details")
            amount = amount_msat if amount_msat is not None else invoice.amount_msat
            if amount is None or (invoice.amount_msat and amount < invoice.amount_msat):
                raise OutsidePaymentFailed("amount too low")
            invoice.pay_index = self.next_pay_index
            self.next_pay_index += 1
            invoice.amount_received_msat = amount
            invoice.paid_at = int(time.time())
            self.channel_local_msat += amount
            self.changed.notify_all()

    def outside_invoice(self, *, amount_msat: int | None, memo: str = "") -> str:
        preimage = secrets.token_hex(32)
        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        self.outside_preimages[payment_hash] = preimage
        return _encode_invoice(
            key=self.outside_key,
            payment_hash=payment_hash,
            amount_msat=amount_msat,
            description=memo,
            description_hash=None,
            expiry=3600,
            created_at=int(time.time()),
        )

    def routing_fee_msat(self, amount_msat: int) -> int:
        return ROUTING_BASE_FEE_MSAT + amount_msat * ROUTING_FEE_PPM // 1_000_000

    def fail_next_payment(self, reason: str = "no_route") -> None:
        with self.lock:
            self._fail_next = reason

    def hang_next_payment(self) -> None:
        with self.lock:
            self._hang_next = True

    def resolve_hung_payments(self, *, succeed: bool) -> None:
        with self.lock:
            for payment_hash, resolution in self._hung.items():
                if resolution is None:
                    self._hung[payment_hash] = succeed
            # Settle the records now, as the node would, even if the pay call's thread is
            # slower to wake than the next lookup.
            for payment in self.payments:
                if payment.status == "pending" and payment.payment_hash in self._hung:
                    preimage = self.outside_preimages.get(payment.payment_hash)
                    if succeed and preimage is not None:
                        self._complete(payment, preimage)
                    else:
                        payment.status = "failed"
            self.changed.notify_all()

    def mine(self, blocks: int) -> None:
        with self.lock:
            first = self.blockheight + 1
            self.blockheight += blocks
            for index, wtx in enumerate(self.txs.values()):
                if wtx.blockheight is None:
                    wtx.blockheight = first
                    wtx.txindex = index
            for utxo in self.utxos.values():
                if utxo.blockheight is None:
                    utxo.blockheight = first
            self.changed.notify_all()

    def receive_onchain(self, *, address: str, amount_sat: int) -> str:
        with self.lock:
            script = self._address_script(address)
            change = p2wpkh(ec.PrivateKey(secrets.token_bytes(32)).get_public_key()).data
            return self._add_tx(self._outside_tx([(script, amount_sat), (change, 50_000)]))
