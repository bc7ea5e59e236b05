"""End to end against the nodes' real protocols: the on-chain app (requests, batch rounds,
recovery, confirmations, deposits) driving the real LND backend (gRPC with TLS and macaroon,
SendMany with a label) and the real Core Lightning backend (JSON-RPC on a unix socket,
multiwithdraw, labels in CLN's datastore) through a `lightning.Node` row pointing at the
in-process fakes of tests/fakes/. What each fake's wallet saw is read from the fake itself."""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from embit import ec, script
from embit.networks import NETWORKS
from rest_framework.test import APIClient

from accounts.services import api_key_issue
from ledger import services as ledger
from ledger.models import Account, Journal
from ledger.selectors import account_balance_msat, user_balance_msat
from lightning.models import Node
from lightning.nodes import forget_backends, node_add, node_backend
from onchain import services
from onchain.models import Batch, OnchainDeposit, OnchainWithdrawal
from tests.fakes.cln_server import FakeClnServer
from tests.fakes.lnd_server import FakeLndServer

REGTEST = NETWORKS["regtest"]
FUNDS_MSAT = 100_000_000  # each user's balance before withdrawing: 100,000 sat


@dataclass(frozen=True)
class Sent:
    """One transaction the fake's wallet made: what it paid to others, its fee, its label."""

    txid: str
    label: str
    paid: tuple[tuple[str, int], ...]  # (address, sat) of outputs that are not the wallet's
    fee_sat: int


class LndChain:
    kind = "lnd"

    def __init__(self, tmp_path) -> None:
        self.server = FakeLndServer()
        self.server.start()
        cert = tmp_path / "tls.cert"
        cert.write_bytes(self.server.cert_pem)
        macaroon = tmp_path / "admin.macaroon"
        macaroon.write_bytes(bytes.fromhex(self.server.macaroon_hex))
        self.connection = self.server.connection_string(
            cert_path=str(cert), macaroon_path=str(macaroon)
        )
        # Every SendMany that reached the node's wallet (refused ones included).
        self.requests: list[str] = []
        send_many = self.server.node.send_many

        def recording(*, outputs, target_conf, label):
            self.requests.append(label)
            return send_many(outputs=outputs, target_conf=target_conf, label=label)

        self.server.node.send_many = recording

    def send_requests(self) -> int:
        return len(self.requests)

    def sends(self) -> list[Sent]:
        with self.server.node.cond:
            return [
                Sent(
                    txid=tx.txid,
                    label=tx.label,
                    paid=tuple(sorted((a, v) for a, v, ours in tx.outputs if not ours)),
                    fee_sat=tx.fee,
                )
                for tx in self.server.node.txs
                if tx.amount < 0
            ]

    def lose_label(self, txid: str) -> None:
        """The wallet forgot the transaction's label (a backend or wallet without labels)."""
        for tx in self.server.node.txs:
            if tx.txid == txid:
                tx.label = ""

    def mine(self, blocks: int) -> None:
        self.server.mine(blocks)

    def receive(self, *, address: str, amount_sat: int) -> str:
        return self.server.receive_onchain(address=address, amount_sat=amount_sat)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.stop()


class ClnChain:
    kind = "cln"

    def __init__(self, tmp_path) -> None:
        self.server = FakeClnServer()
        self.connection = f"type=clightning;server=unix://{self.server.socket_path}"
        # Every multiwithdraw the node ran (refused ones included; not those dropped unread).
        self.requests = 0
        multiwithdraw = self.server.rpc_multiwithdraw

        def recording(**params):
            self.requests += 1
            return multiwithdraw(**params)

        self.server.rpc_multiwithdraw = recording

    def send_requests(self) -> int:
        return self.requests

    def _labels(self) -> dict[str, str]:
        labels = {}
        for key, (value, _) in self.server.datastore.items():
            if key[:2] == ("satledger", "sendmany") and json.loads(value).get("txid"):
                labels[json.loads(value)["txid"]] = key[2]
        return labels

    def sends(self) -> list[Sent]:
        server = self.server
        with server.lock:
            labels = self._labels()
            result = []
            for txid, wtx in server.txs.items():
                inputs = [(i.txid.hex(), i.vout) for i in wtx.tx.vin]
                if not all(i in server.utxos for i in inputs):
                    continue  # someone else's transaction paying us
                spent = sum(server.utxos[i].amount_sat for i in inputs)
                outputs = wtx.tx.vout
                result.append(
                    Sent(
                        txid=txid,
                        label=labels.get(txid, ""),
                        paid=tuple(
                            sorted(
                                (script.Script(o.script_pubkey.data).address(REGTEST), o.value)
                                for o in outputs
                                if o.script_pubkey.data not in server.our_scripts
                            )
                        ),
                        fee_sat=spent - sum(o.value for o in outputs),
                    )
                )
            return result

    def forget_txid(self, label: str) -> None:
        """The backend's label map lost the txid (it died before writing it)."""
        key = ("satledger", "sendmany", label)
        value, generation = self.server.datastore[key]
        record = json.loads(value)
        record.pop("txid")
        self.server.datastore[key] = (json.dumps(record), generation + 1)

    def forget_label(self, label: str) -> None:
        """The label map lost the whole record (datastore restored from an old backup)."""
        del self.server.datastore[("satledger", "sendmany", label)]

    def mine(self, blocks: int) -> None:
        self.server.mine(blocks)

    def receive(self, *, address: str, amount_sat: int) -> str:
        return self.server.receive_onchain(address=address, amount_sat=amount_sat)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.LIGHTNING_CALL_TIMEOUT_S = 2  # a stopped node is given up on quickly
    settings.ONCHAIN_RESEND_AFTER_S = 300
    forget_backends()
    cache.clear()
    yield
    forget_backends()
    cache.clear()


@pytest.fixture(params=["lnd", "cln"])
def chain(request, tmp_path, db):
    made = (LndChain if request.param == "lnd" else ClnChain)(tmp_path)
    made.node = node_add(name=f"{made.kind}-chain", connection=made.connection)
    yield made
    forget_backends()
    made.close()


_address_kinds = itertools.cycle(["p2wpkh", "p2tr", "p2wsh", "p2pkh", "p2sh"])


def outside_address(kind: str | None = None) -> str:
    """A fresh regtest address of someone else, of each type in turn."""
    kind = kind or next(_address_kinds)
    key = ec.PrivateKey(os.urandom(32)).get_public_key()
    made = {
        "p2wpkh": lambda: script.p2wpkh(key),
        "p2tr": lambda: script.p2tr(key),
        "p2wsh": lambda: script.p2wsh(script.p2pkh(key)),
        "p2pkh": lambda: script.p2pkh(key),
        "p2sh": lambda: script.p2sh(script.p2wpkh(key)),
    }[kind]()
    return made.address(REGTEST)


def fund(node: Node, user, amount_msat: int = FUNDS_MSAT) -> None:
    ledger.transfer(
        idempotency_key=f"protocol-fakes-fund:{user.uuid}:{uuid.uuid4().hex}",
        kind="deposit",
        debit=ledger.node_asset_account_get_or_create(node_name=node.name, rail="onchain"),
        credit=ledger.user_account_get_or_create(user=user),
        amount_msat=amount_msat,
    )


def request_withdrawals(chain, make_user, amounts_per_user):
    """Users (funded) asking for withdrawals; returns [(user, [withdrawal, ...]), ...]."""
    made = []
    for amounts in amounts_per_user:
        user = make_user()
        fund(chain.node, user)
        rows = [
            services.withdrawal_request(user=user, address=outside_address(), amount_sat=amount)
            for amount in amounts
        ]
        made.append((user, rows))
    return made


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_flight_msat() -> int:
    return account_balance_msat(
        account=ledger.system_account_get_or_create(code=ledger.WITHDRAWALS_IN_FLIGHT)
    )


def assert_sent_as_one_transaction(chain, requested) -> tuple[Batch, Sent]:
    withdrawals = [w for _, rows in requested for w in rows]
    [sent] = chain.sends()
    assert chain.send_requests() == 1
    assert sent.paid == tuple(sorted((w.address, w.amount_sat) for w in withdrawals))
    batch = Batch.objects.get()
    assert (batch.status, batch.txid, batch.fee_sat) == ("broadcast", sent.txid, sent.fee_sat)
    assert sent.label == batch.label
    return batch, sent


# --- 1. one transaction for every request ---------------------------------------------------


def test_round_sends_one_transaction_and_splits_its_fee(chain, make_user, ledger_ok):
    requested = request_withdrawals(chain, make_user, [[10_000, 12_500], [30_000], [700, 45_000]])
    assert chain.sends() == []

    report = services.batch_round(force=True)

    batch, sent = assert_sent_as_one_transaction(chain, requested)
    assert report.sent == [batch.pk] and not report.failed and not report.unknown
    assert batch.output_count == 5 and batch.total_sat == 98_200
    withdrawals = list(OnchainWithdrawal.objects.order_by("id"))
    assert {w.status for w in withdrawals} == {"broadcast"}
    assert {w.batch_id for w in withdrawals} == {batch.pk}
    # The node's fee, split exactly; each part is within the reserve, so the user pays it all.
    assert sum(w.fee_share_msat for w in withdrawals) == sent.fee_sat * 1000
    assert all(0 < w.fee_msat == w.fee_share_msat <= w.fee_reserve_msat for w in withdrawals)
    for user, rows in requested:
        spent = sum(
            w.amount_sat * 1000 + w.fee_msat
            for w in OnchainWithdrawal.objects.filter(pk__in=[r.pk for r in rows])
        )
        # The unused reserve came back: only amounts and fee parts left the balance.
        assert user_balance_msat(user=user) == FUNDS_MSAT - spent
    assert in_flight_msat() == 0
    node_account = ledger.node_asset_account_get_or_create(
        node_name=chain.node.name, rail="onchain"
    )
    funded = FUNDS_MSAT * len(requested)
    assert account_balance_msat(account=node_account) == funded - (98_200 + sent.fee_sat) * 1000
    ledger_ok()

    services.batch_round(force=True)  # nothing queued: nothing more sent
    assert chain.send_requests() == 1 and len(chain.sends()) == 1


def test_fee_above_the_reserves_is_the_operators(chain, make_user, settings, ledger_ok):
    settings.ONCHAIN_FEE_RESERVE_SAT = 100  # below either node's fee for two outputs
    requested = request_withdrawals(chain, make_user, [[10_000], [30_000]])
    services.batch_round(force=True)
    _, sent = assert_sent_as_one_transaction(chain, requested)
    withdrawals = list(OnchainWithdrawal.objects.order_by("id"))
    assert sum(w.fee_share_msat for w in withdrawals) == sent.fee_sat * 1000
    assert all(w.fee_msat == w.fee_reserve_msat == 100_000 for w in withdrawals)
    for user, [row] in requested:
        assert user_balance_msat(user=user) == FUNDS_MSAT - row.amount_sat * 1000 - 100_000
    expense = Account.objects.get(code=services.ONCHAIN_FEES)
    excess = sum(w.fee_share_msat - w.fee_msat for w in withdrawals)
    assert excess > 0 and account_balance_msat(account=expense) == excess
    ledger_ok()


# --- 2. confirmations -------------------------------------------------------------------------


def test_blocks_confirm_the_batch(chain, make_user, settings, ledger_ok):
    required = settings.ONCHAIN_CONFIRMATIONS
    requested = request_withdrawals(chain, make_user, [[20_000], [25_000]])
    services.batch_round(force=True)
    batch, _ = assert_sent_as_one_transaction(chain, requested)

    services.batch_round()
    batch.refresh_from_db()
    assert (batch.status, batch.confirmations) == ("broadcast", 0)
    for mined in range(1, required + 1):
        chain.mine(1)
        report = services.batch_round()
        batch.refresh_from_db()
        assert batch.confirmations == mined and batch.block_height
        if mined < required:
            assert batch.status == "broadcast" and not report.confirmed
            assert {w.status for w in OnchainWithdrawal.objects.all()} == {"broadcast"}
    assert report.confirmed == [batch.pk]
    assert batch.status == "confirmed" and batch.confirmed_at is not None
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"confirmed"}
    chain.mine(2)
    services.batch_round()
    batch.refresh_from_db()
    assert batch.status == "confirmed"  # final: no longer tracked
    assert chain.send_requests() == 1
    ledger_ok()


# --- 3. a crash between broadcast and commit ----------------------------------------------------


class WorkerKilled(BaseException):
    """The worker process dies (not an Exception: nothing may catch it)."""


@pytest.mark.parametrize(
    ("chain", "loss"),
    [
        ("lnd", "nothing"),
        ("lnd", "label"),  # found by its outputs among the wallet's transactions
        ("cln", "nothing"),  # the backend's datastore label map has the txid
        ("cln", "txid"),  # the map has the intent only: matched by its outputs
        ("cln", "label"),  # the map lost it: the wallet's transactions searched
    ],
    indirect=["chain"],
)
def test_crash_after_broadcast_is_recovered_without_a_second_send(
    chain, loss, make_user, monkeypatch, ledger_ok
):
    requested = request_withdrawals(chain, make_user, [[10_000, 11_000], [12_000]])

    def die(**kwargs):
        raise WorkerKilled("killed right after send_many returned")

    with monkeypatch.context() as patch:
        patch.setattr(services, "batch_record_broadcast", die)
        with pytest.raises(WorkerKilled):
            services.batch_round(force=True)
    batch = Batch.objects.get()
    assert batch.status == "created" and batch.sent_at is not None and not batch.txid
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"batched"}
    [sent] = chain.sends()
    if loss == "label" and chain.kind == "lnd":
        chain.lose_label(sent.txid)
    elif loss == "txid":
        chain.forget_txid(batch.label)
    elif loss == "label":
        chain.forget_label(batch.label)

    forget_backends()  # a fresh worker
    report = services.batch_round(force=True)

    assert report.recovered == [batch.pk] and not report.sent
    assert chain.send_requests() == 1 and len(chain.sends()) == 1
    batch.refresh_from_db()
    assert (batch.status, batch.txid, batch.fee_sat) == ("broadcast", sent.txid, sent.fee_sat)
    withdrawals = list(OnchainWithdrawal.objects.all())
    assert {w.status for w in withdrawals} == {"broadcast"}
    assert sum(w.fee_share_msat for w in withdrawals) == sent.fee_sat * 1000
    assert in_flight_msat() == 0
    for user, rows in requested:
        rows = [OnchainWithdrawal.objects.get(pk=r.pk) for r in rows]
        spent = sum(w.amount_sat * 1000 + w.fee_msat for w in rows)
        assert user_balance_msat(user=user) == FUNDS_MSAT - spent
    ledger_ok()

    services.batch_round(force=True)  # and again: nothing more
    assert chain.send_requests() == 1 and len(chain.sends()) == 1


def test_lost_reply_is_outcome_unknown_then_found_by_label(chain, make_user, ledger_ok):
    requested = request_withdrawals(chain, make_user, [[10_000], [20_000]])
    # The node carries out the send, but its answer never reaches us.
    if chain.kind == "cln":
        chain.server.hooks.drop_after.add("multiwithdraw")
    else:
        chain.server.node.delay_s = 3.0  # past our deadline of 2 s; LND goes on anyway
    report = services.batch_round(force=True)
    if chain.kind == "lnd":
        chain.server.node.delay_s = 0.0
    batch = Batch.objects.get()
    assert report.unknown == [batch.pk] and batch.status == "created"
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"batched"}
    wait_for(lambda: len(chain.sends()) == 1)

    report = services.batch_round(force=True)
    assert report.recovered == [batch.pk] and not report.sent
    batch, sent = assert_sent_as_one_transaction(chain, requested)
    assert sum(w.fee_share_msat for w in OnchainWithdrawal.objects.all()) == sent.fee_sat * 1000
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"broadcast"}
    ledger_ok()


def test_send_that_never_ran_is_sent_again_with_the_same_label_after_the_wait(
    chain, make_user, monkeypatch, ledger_ok
):
    requested = request_withdrawals(chain, make_user, [[10_000, 15_000]])
    with monkeypatch.context() as patch:
        if chain.kind == "cln":
            chain.server.hooks.drop_before.add("multiwithdraw")  # received, never run
        else:

            def crashed(**kwargs):  # an internal error: LND answers UNKNOWN, nothing sent
                raise RuntimeError("wallet is shutting down")

            patch.setattr(chain.server.node, "send_many", crashed)
        report = services.batch_round(force=True)
    batch = Batch.objects.get()
    assert report.unknown == [batch.pk] and batch.status == "created"
    assert chain.sends() == [] and chain.send_requests() == 0

    report = services.batch_round(force=True)  # not found, but too early to send again
    assert not report.sent and not report.recovered and chain.sends() == []
    Batch.objects.filter(pk=batch.pk).update(sent_at=timezone.now() - timedelta(seconds=301))
    report = services.batch_round(force=True)
    assert report.sent == [batch.pk]
    batch, _ = assert_sent_as_one_transaction(chain, requested)
    assert batch.send_attempts == 2
    ledger_ok()


def test_an_earlier_batch_paying_the_same_outputs_is_not_taken_for_a_lost_one(
    chain, make_user, monkeypatch, ledger_ok
):
    """A user withdraws the same amount to the same address again. The second batch's send
    never runs (outcome unknown): the recovery's search by outputs must not take the first
    batch's transaction for it (that would post the withdrawal as sent while nothing was)."""
    user = make_user()
    fund(chain.node, user)
    address = outside_address("p2wpkh")
    first = services.withdrawal_request(user=user, address=address, amount_sat=10_000)
    services.batch_round(force=True)
    first.refresh_from_db()
    [earlier] = chain.sends()
    assert first.status == "broadcast" and first.batch.txid == earlier.txid

    second = services.withdrawal_request(user=user, address=address, amount_sat=10_000)
    with monkeypatch.context() as patch:
        if chain.kind == "cln":
            chain.server.hooks.drop_before.add("multiwithdraw")
        else:

            def crashed(**kwargs):
                raise RuntimeError("wallet is shutting down")

            patch.setattr(chain.server.node, "send_many", crashed)
        report = services.batch_round(force=True)
    lost = Batch.objects.get(pk=report.unknown[0])
    assert len(chain.sends()) == 1

    report = services.batch_round(force=True)
    lost.refresh_from_db()
    second.refresh_from_db()
    assert not report.recovered and lost.status == "created" and not lost.txid
    assert second.status == "batched"
    Batch.objects.filter(pk=lost.pk).update(sent_at=timezone.now() - timedelta(seconds=301))
    report = services.batch_round(force=True)
    assert report.sent == [lost.pk]
    sends = chain.sends()
    assert len(sends) == 2 and sends[0].paid == sends[1].paid == ((address, 10_000),)
    lost.refresh_from_db()
    second.refresh_from_db()
    assert lost.txid == sends[1].txid != earlier.txid and second.status == "broadcast"
    ledger_ok()


def test_node_gone_right_after_broadcasting_is_not_taken_for_nothing_sent(
    chain, make_user, ledger_ok
):
    """The node broadcasts, answers, and then stops answering while the backend reads the
    transaction's details: send_many must still report the broadcast txid. An error there
    would read as "nothing was sent" and the requests would go out a second time."""
    requested = request_withdrawals(chain, make_user, [[10_000], [20_000]])
    if chain.kind == "cln":
        multiwithdraw = chain.server.rpc_multiwithdraw

        def then_gone(**params):
            result = multiwithdraw(**params)
            chain.server.hooks.drop_before.update({"datastore", "getinfo"})
            return result

        chain.server.rpc_multiwithdraw = then_gone
    else:
        send_many = chain.server.node.send_many

        def then_gone(**kwargs):
            txid = send_many(**kwargs)
            chain.server.node.delay_s = 3.0  # every later answer misses our deadline
            return txid

        chain.server.node.send_many = then_gone
    report = services.batch_round(force=True)
    if chain.kind == "lnd":
        chain.server.node.delay_s = 0.0
    [sent] = chain.sends()
    batch = Batch.objects.get()
    assert report.sent == [batch.pk] and not report.failed
    assert (batch.status, batch.txid) == ("broadcast", sent.txid)
    if batch.fee_sat is None:  # the fee is read from the node by the next round
        assert {w.status for w in OnchainWithdrawal.objects.all()} == {"batched"}
        services.batch_round(force=True)
        batch.refresh_from_db()
    assert batch.fee_sat == sent.fee_sat
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"broadcast"}
    assert sum(w.fee_share_msat for w in OnchainWithdrawal.objects.all()) == sent.fee_sat * 1000
    # The label still finds it (CLN: the intent in the datastore, matched by its outputs).
    assert node_backend(chain.node).lookup_transaction(label=batch.label).txid == sent.txid
    assert_sent_as_one_transaction(chain, requested)
    ledger_ok()


# --- 4. node down ---------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before the round", "after the batch is formed"])
def test_node_down_sends_nothing_then_one_transaction(
    chain, when, make_user, monkeypatch, ledger_ok
):
    requested = request_withdrawals(chain, make_user, [[10_000], [20_000, 30_000]])
    balances = {user.pk: user_balance_msat(user=user) for user, _ in requested}
    if when == "before the round":
        chain.stop()
        report = services.batch_round(force=True)
    else:
        claim = services._claim

        def stop_then_claim(**kwargs):
            chain.stop()
            return claim(**kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(services, "_claim", stop_then_claim)
            report = services.batch_round(force=True)
    assert chain.send_requests() == 0 and chain.sends() == []
    withdrawals = list(OnchainWithdrawal.objects.all())
    assert {w.status for w in withdrawals} == {"queued"}
    assert {w.batch_id for w in withdrawals} == {None}
    assert all(w.attempts == 0 for w in withdrawals)  # unreachable is not a refusal
    [batch] = Batch.objects.all()  # formed before the node is called, then failed
    assert batch.status == "failed" and report.failed == [batch.pk] and not report.unknown
    # Still reserved: nothing refunded, nothing posted.
    assert {user.pk: user_balance_msat(user=user) for user, _ in requested} == balances
    chain.node.refresh_from_db()
    assert not chain.node.healthy
    ledger_ok()

    chain.start()
    report = services.batch_round(force=True)
    assert len(report.sent) == 1
    live = Batch.objects.get(pk=report.sent[0])
    [sent] = chain.sends()
    assert chain.send_requests() == 1
    assert sent.paid == tuple(
        sorted((w.address, w.amount_sat) for _, rows in requested for w in rows)
    )
    assert (live.status, live.txid) == ("broadcast", sent.txid)
    assert {w.status for w in OnchainWithdrawal.objects.all()} == {"broadcast"}
    assert in_flight_msat() == 0
    ledger_ok()


# --- 5. deposits ------------------------------------------------------------------------------


def test_deposit_is_credited_once_after_its_confirmations(chain, make_user, settings, ledger_ok):
    required = settings.ONCHAIN_DEPOSIT_CONFIRMATIONS
    user = make_user()
    _, key = api_key_issue(user=user, name="t", scopes=["read", "receive"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post("/api/v1/onchain/deposit-address")
    assert response.status_code == 200, response.content
    address = response.json()["address"]
    assert client.post("/api/v1/onchain/deposit-address").json()["address"] == address

    txid = chain.receive(address=address, amount_sat=40_000)
    services.deposits_scan()
    deposit = OnchainDeposit.objects.get()
    assert (deposit.txid, deposit.vout, deposit.amount_sat) == (txid, 0, 40_000)
    assert (deposit.status, deposit.confirmations) == ("pending", 0)
    assert user_balance_msat(user=user) == 0
    # Funds arrived on it: the next deposit goes to a fresh address.
    fresh = client.post("/api/v1/onchain/deposit-address").json()["address"]
    assert fresh != address

    chain.mine(required - 1)
    services.deposits_scan()
    deposit.refresh_from_db()
    assert (deposit.status, deposit.confirmations) == ("pending", required - 1)
    assert user_balance_msat(user=user) == 0

    chain.mine(1)
    first = services.deposits_scan()
    second = services.deposits_scan()
    assert (first.credited, second.credited) == (1, 0)
    chain.mine(3)
    assert services.deposits_scan().credited == 0
    deposit.refresh_from_db()
    assert deposit.status == "credited" and deposit.credited_at is not None
    assert user_balance_msat(user=user) == 40_000_000
    assert Journal.objects.filter(idempotency_key=f"onchain-deposit:{txid}:0").count() == 1
    node_account = ledger.node_asset_account_get_or_create(
        node_name=chain.node.name, rail="onchain"
    )
    assert account_balance_msat(account=node_account) == 40_000_000
    listed = client.get("/api/v1/onchain/deposits").json()["results"]
    assert [(d["txid"], d["status"], d["amount_sat"]) for d in listed] == [
        (txid, "credited", 40_000)
    ]
    ledger_ok()
