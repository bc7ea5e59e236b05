"""An in-memory on-chain wallet behind the backend interface, for the batch job's tests
(thread-safe, with knobs to make the next send fail in each way a node can)."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import replace

from embit.bech32 import encode

from lightning.backends import base

_counter = itertools.count()


def random_address(hrp: str = "bcrt", version: int = 0, size: int = 20) -> str:
    return encode(hrp, version, list(os.urandom(size)))


class MemoryWallet:
    def __init__(self, *, fee_per_output_sat: int = 31, base_fee_sat: int = 150) -> None:
        self.lock = threading.Lock()
        self.txs: dict[str, base.OnchainTransaction] = {}
        self.order: list[str] = []
        self.sends: list[tuple[str, tuple[tuple[str, int], ...]]] = []  # (label, outputs)
        self.addresses: set[str] = set()
        self.fee_per_output_sat = fee_per_output_sat
        self.base_fee_sat = base_fee_sat
        self.fee_override_sat: int | None = None
        self.next_error: Exception | None = None  # raised before anything is sent
        self.unknown_after_send = False  # broadcast, then raise OutcomeUnknown
        self.hide_labels = False  # lookups by label find nothing (a backend without labels)
        self.report_fee = True
        self.unreachable = False
        self.send_delay_s = 0.0

    # --- the backend methods used by the on-chain app ------------------------------------
    def new_address(self) -> str:
        self._check_up()
        address = random_address()
        self.addresses.add(address)
        return address

    def estimate_fee(self, *, outputs, target_conf):
        return base.FeeEstimate(fee_sat=self._fee(len(outputs)), sat_per_vbyte=2)

    def send_many(self, *, outputs: Sequence[tuple[str, int]], target_conf: int, label: str):
        self._check_up()
        if self.send_delay_s:
            import time

            time.sleep(self.send_delay_s)
        with self.lock:
            if self.next_error is not None:
                error, self.next_error = self.next_error, None
                raise error
            fee = self._fee(len(outputs))
            txid = hashlib.sha256(f"{label}:{next(_counter)}".encode()).hexdigest()
            tx = base.OnchainTransaction(
                txid=txid,
                confirmations=0,
                fee_sat=fee,
                label=label,
                outputs=tuple(base.OnchainOutput(a, s) for a, s in outputs),
            )
            self.txs[txid] = tx
            self.order.append(txid)
            self.sends.append((label, tuple(outputs)))
            if self.unknown_after_send:
                self.unknown_after_send = False
                raise base.OutcomeUnknown("connection dropped after the request was sent")
        return tx if self.report_fee else replace(tx, fee_sat=None)

    def lookup_transaction(self, *, txid=None, label=None):
        self._check_up()
        with self.lock:
            for tx in self.txs.values():
                if txid is not None and tx.txid == txid:
                    return tx
                if label is not None and not self.hide_labels and tx.label == label:
                    return tx
        return None

    def list_transactions(self, *, min_confirmations: int = 0):
        self._check_up()
        with self.lock:
            return [
                self.txs[t] for t in self.order if self.txs[t].confirmations >= min_confirmations
            ]

    # --- the outside world -----------------------------------------------------------------
    def mine(self, blocks: int = 1) -> None:
        with self.lock:
            for txid, tx in self.txs.items():
                self.txs[txid] = replace(tx, confirmations=tx.confirmations + blocks)

    def receive(self, *, address: str, amount_sat: int, extra_outputs: int = 0) -> str:
        with self.lock:
            txid = hashlib.sha256(f"in:{next(_counter)}".encode()).hexdigest()
            outputs = [base.OnchainOutput(random_address(), 1234) for _ in range(extra_outputs)]
            outputs.append(base.OnchainOutput(address, amount_sat, ours=True))
            self.txs[txid] = base.OnchainTransaction(
                txid=txid, confirmations=0, fee_sat=None, outputs=tuple(outputs)
            )
            self.order.append(txid)
            return txid

    def drop(self, txid: str) -> None:
        with self.lock:
            self.txs.pop(txid)
            self.order.remove(txid)

    def _fee(self, outputs: int) -> int:
        if self.fee_override_sat is not None:
            return self.fee_override_sat
        return self.base_fee_sat + self.fee_per_output_sat * outputs

    def _check_up(self) -> None:
        if self.unreachable:
            raise base.NodeUnreachable("connection refused")
