"""The simulated node passes the backend contract, plus what only it does: toggles, routing
between two fake nodes in one database, settle_index allocation under concurrency."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from lightning.backends.base import (
    InvoiceState,
    Network,
    NodeRejected,
    NodeUnreachable,
    PaymentStatus,
)
from lightning.backends.fake import FakeBackend
from lightning.connection import InvalidConnectionString, build_backend
from lightning.fakenode import services
from lightning.fakenode.errors import FakeNodeError
from lightning.fakenode.models import FakeInvoice, FakeNode
from lightning.fakenode.world import FakeWorld
from tests.lightning.contract import BackendContract, next_settlement, preimage_matches
from tests.pg import other_connection


def make_backend(name: str = "fake", connection_string: str = "type=fake") -> FakeBackend:
    backend = build_backend(connection_string, node_name=name, network=Network.REGTEST, timeout_s=5)
    assert isinstance(backend, FakeBackend)
    return backend


@pytest.fixture
def backend(db):
    return make_backend()


@pytest.fixture
def world(backend):
    return FakeWorld(node_name=backend.node_name, network=backend.network)


@pytest.fixture
def bad_auth_backend():
    return None


@pytest.fixture
def secrets():
    return []


class TestFakeBackend(BackendContract):
    pass


# --- connection string and identity --------------------------------------------------------


def test_connection_string_parameters(db):
    backend = make_backend(
        "shop", "type=fake;alias=Shop;fee_base_msat=0;fee_ppm=5000;local_msat=5000;remote_msat=7"
    )
    info = backend.get_info()
    balances = backend.get_balances()
    assert info.alias == "Shop"
    assert (balances.channel_local_msat, balances.channel_remote_msat) == (5_000, 7)
    assert FakeWorld(node_name="shop", network=Network.REGTEST).routing_fee_msat(1_000_000) == 5_000


@pytest.mark.parametrize(
    "bad", ["type=fake;fee_ppm=abc", "type=fake;fee_ppm=-1", "type=fake;colour=red"]
)
def test_bad_connection_string(bad):
    with pytest.raises(InvalidConnectionString):
        make_backend("x", bad)


def test_identity_is_stable_per_name_and_distinct_between_names(db):
    first = make_backend("one").get_info().pubkey
    assert make_backend("one").get_info().pubkey == first
    assert make_backend("two").get_info().pubkey != first


def test_invoices_are_signed_by_the_node_key(backend):
    created = backend.create_invoice(amount_msat=1_000, memo="m", expiry_s=60, label="sig")
    assert backend.decode_invoice(bolt11=created.bolt11).payee == backend.get_info().pubkey


# --- receiving -------------------------------------------------------------------------------


def test_duplicate_label_is_rejected(backend):
    backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="same")
    with pytest.raises(NodeRejected) as raised:
        backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="same")
    assert raised.value.reason == "duplicate_label"


def test_settled_invoice_cannot_be_cancelled_or_paid_twice(backend, world):
    created = backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="twice")
    world.pay_from_outside(created.bolt11)
    with pytest.raises(NodeRejected) as raised:
        backend.cancel_invoice(payment_hash=created.payment_hash)
    assert raised.value.reason == "already_paid"
    with pytest.raises(FakeNodeError):
        world.pay_from_outside(created.bolt11)
    assert backend.lookup_invoice(payment_hash=created.payment_hash).amount_received_msat == 1_000


def test_expired_invoice_reads_cancelled_and_cannot_be_paid(backend, world):
    created = backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="old")
    FakeInvoice.objects.filter(payment_hash=created.payment_hash).update(
        expires_at=created.expires_at.replace(year=2000)
    )
    assert backend.lookup_invoice(payment_hash=created.payment_hash).state == InvoiceState.CANCELED
    with pytest.raises(FakeNodeError) as raised:
        world.pay_from_outside(created.bolt11)
    assert raised.value.reason == "incorrect_payment_details"


def _cancel_statements(backend, payment_hash: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        backend.cancel_invoice(payment_hash=payment_hash)
    return [query["sql"] for query in queries.captured_queries]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's commit settings")
def test_a_cancel_of_its_own_commits_without_waiting_and_the_setting_ends_with_it(committed_db):
    """The simulator's cancel, when it is its own transaction, does not wait for its WAL flush
    (the internal payment's commit right after it flushes past it); the setting lives only in
    that statement's transaction, never in a caller's."""
    backend = make_backend()
    alone = backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="alone")
    inside = backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="inside")

    statements = _cancel_statements(backend, alone.payment_hash)
    assert any("synchronous_commit" in sql for sql in statements)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    with other_connection() as other:
        state = other.execute(
            f"SELECT state FROM {FakeInvoice._meta.db_table} WHERE payment_hash = %s",
            [alone.payment_hash],
        ).fetchone()[0]
    assert state == "canceled"  # committed: another connection sees it

    with transaction.atomic():
        statements = _cancel_statements(backend, inside.payment_hash)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
    assert not any("synchronous_commit" in sql for sql in statements)
    assert backend.lookup_invoice(payment_hash=inside.payment_hash).state == InvoiceState.CANCELED


def test_underpayment_is_refused(backend, world):
    created = backend.create_invoice(amount_msat=10_000, memo="", expiry_s=60, label="under")
    with pytest.raises(FakeNodeError):
        world.pay_from_outside(created.bolt11, amount_msat=9_999)
    world.pay_from_outside(created.bolt11, amount_msat=12_000)  # overpaying is allowed
    assert backend.lookup_invoice(payment_hash=created.payment_hash).amount_received_msat == 12_000


def test_receiving_moves_liquidity(backend, world):
    before = backend.get_balances()
    created = backend.create_invoice(amount_msat=5_000, memo="", expiry_s=60, label="liq")
    world.pay_from_outside(created.bolt11)
    after = backend.get_balances()
    assert after.channel_local_msat == before.channel_local_msat + 5_000
    assert after.channel_remote_msat == before.channel_remote_msat - 5_000


def test_receiving_needs_inbound_liquidity(db):
    backend = make_backend("tiny", "type=fake;remote_msat=1000")
    world = FakeWorld(node_name="tiny", network=Network.REGTEST)
    created = backend.create_invoice(amount_msat=2_000, memo="", expiry_s=60, label="big")
    with pytest.raises(FakeNodeError) as raised:
        world.pay_from_outside(created.bolt11)
    assert raised.value.reason == "no_route"


def test_stream_cursor_is_the_settle_index_and_rejects_garbage(backend, world):
    hashes = []
    for n in range(3):
        created = backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label=f"s{n}")
        world.pay_from_outside(created.bolt11)
        hashes.append(created.payment_hash)
    seen = []
    cursor = None
    for _ in range(3):
        settlement = next_settlement(backend, cursor)
        cursor = settlement.cursor
        seen.append((settlement.cursor, settlement.invoice.payment_hash))
    assert seen == [(str(n + 1), h) for n, h in enumerate(hashes)]
    with pytest.raises(NodeRejected):
        next(backend.stream_settled_invoices(cursor="abc"))


def test_stream_ends_with_unreachable_when_node_goes_down(backend, world):
    stream = backend.stream_settled_invoices(cursor=None)
    world.stop()
    with pytest.raises(NodeUnreachable):
        next(stream)
    world.start()


# --- paying ----------------------------------------------------------------------------------


def test_fee_over_limit_fails(backend, world):
    bolt11 = world.outside_invoice(amount_msat=1_000_000)
    fee = world.routing_fee_msat(1_000_000)
    result = backend.pay_invoice(bolt11=bolt11, max_fee_msat=fee - 1, timeout_s=1)
    assert result.status == PaymentStatus.FAILED
    assert result.failure_reason == "fee_exceeds_limit"
    # a failed payment may be tried again
    retried = backend.pay_invoice(bolt11=bolt11, max_fee_msat=fee, timeout_s=1)
    assert retried.status == PaymentStatus.SUCCEEDED and retried.fee_msat == fee


def test_paying_twice_is_refused(backend, world):
    bolt11 = world.outside_invoice(amount_msat=1_000)
    assert backend.pay_invoice(bolt11=bolt11, max_fee_msat=5_000, timeout_s=1).status == "succeeded"
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11=bolt11, max_fee_msat=5_000, timeout_s=1)
    assert raised.value.reason == "already_paid"


def test_unknown_payee_fails_with_no_route(backend):
    other = make_backend("stranger")
    created = other.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="x")
    # Forget the stranger: its invoice is now one nobody here can settle.
    FakeNode.objects.filter(name="stranger").delete()
    result = backend.pay_invoice(bolt11=created.bolt11, max_fee_msat=5_000, timeout_s=1)
    assert result.status == PaymentStatus.FAILED and result.failure_reason == "no_route"


def test_payment_refusals_before_sending(backend, world):
    amountless = world.outside_invoice(amount_msat=None)
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11=amountless, max_fee_msat=5_000, timeout_s=1)
    assert raised.value.reason == "amount_required"
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11="lnbc1garbage", max_fee_msat=5_000, timeout_s=1)
    assert raised.value.reason == "wrong_network"
    own = backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label="own")
    with pytest.raises(NodeRejected) as raised:
        backend.pay_invoice(bolt11=own.bolt11, max_fee_msat=5_000, timeout_s=1)
    assert raised.value.reason == "self_payment"


def test_insufficient_outbound_liquidity_fails(db):
    backend = make_backend("poor", "type=fake;local_msat=1500")
    world = FakeWorld(node_name="poor", network=Network.REGTEST)
    result = backend.pay_invoice(
        bolt11=world.outside_invoice(amount_msat=1_000), max_fee_msat=5_000, timeout_s=1
    )
    assert result.status == PaymentStatus.FAILED
    assert result.failure_reason == "insufficient_balance"


def test_payment_moves_liquidity_and_failures_give_it_back(backend, world):
    before = backend.get_balances()
    world.hang_next_payment()
    hung = world.outside_invoice(amount_msat=10_000)
    assert backend.pay_invoice(bolt11=hung, max_fee_msat=5_000, timeout_s=0.1).status == "pending"
    fee = world.routing_fee_msat(10_000)
    assert backend.get_balances().channel_local_msat == before.channel_local_msat - 10_000 - fee
    world.resolve_hung_payments(succeed=False)
    failed = backend.lookup_payment(payment_hash=backend.decode_invoice(bolt11=hung).payment_hash)
    assert failed.status == PaymentStatus.FAILED and failed.failure_reason == "timeout"
    assert backend.get_balances() == before
    paid = backend.pay_invoice(
        bolt11=world.outside_invoice(amount_msat=10_000), max_fee_msat=5_000, timeout_s=1
    )
    assert paid.status == PaymentStatus.SUCCEEDED
    after = backend.get_balances()
    assert after.channel_local_msat == before.channel_local_msat - 10_000 - fee
    assert after.channel_remote_msat == before.channel_remote_msat + 10_000 + fee


def test_fail_next_counts_down(backend, world):
    services.node_fail_next(name=backend.node_name, count=2, reason="temporary_channel_failure")
    results = [
        backend.pay_invoice(
            bolt11=world.outside_invoice(amount_msat=1_000), max_fee_msat=5_000, timeout_s=1
        )
        for _ in range(3)
    ]
    assert [r.status for r in results] == ["failed", "failed", "succeeded"]
    assert results[0].failure_reason == "temporary_channel_failure"


def test_down_node_refuses_every_call(backend, world):
    world.stop()
    try:
        for call in (
            lambda: backend.get_balances(),
            lambda: backend.create_invoice(amount_msat=1, memo="", expiry_s=60, label="d"),
            lambda: backend.pay_invoice(bolt11="x", max_fee_msat=1, timeout_s=1),
            lambda: backend.lookup_payment(payment_hash="00" * 32),
            lambda: backend.new_address(),
        ):
            with pytest.raises(NodeUnreachable):
                call()
    finally:
        world.start()


# --- two fake nodes in one database ----------------------------------------------------------


def test_two_fake_nodes_pay_each_other(db):
    alice, bob = make_backend("alice"), make_backend("bob")
    bob_before, alice_before = bob.get_balances(), alice.get_balances()
    invoice = bob.create_invoice(amount_msat=50_000, memo="from alice", expiry_s=600, label="b1")
    result = alice.pay_invoice(bolt11=invoice.bolt11, max_fee_msat=10_000, timeout_s=1)
    assert result.status == PaymentStatus.SUCCEEDED
    assert preimage_matches(result.preimage, invoice.payment_hash)
    fee = FakeWorld(node_name="alice", network=Network.REGTEST).routing_fee_msat(50_000)
    assert result.fee_msat == fee
    status = bob.lookup_invoice(payment_hash=invoice.payment_hash)
    assert status.state == InvoiceState.SETTLED and status.amount_received_msat == 50_000
    assert status.preimage == result.preimage
    assert next_settlement(bob, None).invoice.payment_hash == invoice.payment_hash
    assert bob.get_balances().channel_local_msat == bob_before.channel_local_msat + 50_000
    assert alice.get_balances().channel_local_msat == alice_before.channel_local_msat - 50_000 - fee

    # and back, amountless
    back = alice.create_invoice(amount_msat=None, memo="", expiry_s=600, label="a1")
    paid = bob.pay_invoice(bolt11=back.bolt11, amount_msat=1_234, max_fee_msat=10_000, timeout_s=1)
    assert paid.status == PaymentStatus.SUCCEEDED
    assert alice.lookup_invoice(payment_hash=back.payment_hash).amount_received_msat == 1_234


def test_hung_payment_between_fake_nodes_settles_on_resolve(db):
    alice, bob = make_backend("alice"), make_backend("bob")
    invoice = bob.create_invoice(amount_msat=3_000, memo="", expiry_s=600, label="h")
    services.node_hang_next(name="alice")
    assert (
        alice.pay_invoice(bolt11=invoice.bolt11, max_fee_msat=5_000, timeout_s=0.1).status
        == "pending"
    )
    assert bob.lookup_invoice(payment_hash=invoice.payment_hash).state == InvoiceState.OPEN
    services.payments_resolve(succeed=True, payment_hash=invoice.payment_hash)
    assert bob.lookup_invoice(payment_hash=invoice.payment_hash).state == InvoiceState.SETTLED
    final = alice.lookup_payment(payment_hash=invoice.payment_hash)
    assert final.status == PaymentStatus.SUCCEEDED and preimage_matches(
        final.preimage, invoice.payment_hash
    )


def test_payment_to_cancelled_or_down_fake_node_fails(db):
    alice, bob = make_backend("alice"), make_backend("bob")
    cancelled = bob.create_invoice(amount_msat=3_000, memo="", expiry_s=600, label="c")
    bob.cancel_invoice(payment_hash=cancelled.payment_hash)
    result = alice.pay_invoice(bolt11=cancelled.bolt11, max_fee_msat=5_000, timeout_s=1)
    assert (result.status, result.failure_reason) == ("failed", "incorrect_payment_details")
    open_one = bob.create_invoice(amount_msat=3_000, memo="", expiry_s=600, label="o")
    services.node_set_down(name="bob", down=True)
    result = alice.pay_invoice(bolt11=open_one.bolt11, max_fee_msat=5_000, timeout_s=1)
    assert (result.status, result.failure_reason) == ("failed", "no_route")


# --- on chain --------------------------------------------------------------------------------


def test_onchain_balances_follow_sends_receipts_and_blocks(backend, world):
    start = backend.get_balances()
    address = backend.new_address()
    assert address.startswith("bcrt1q")
    world.receive_onchain(address=address, amount_sat=40_000)
    assert backend.get_balances().onchain_unconfirmed_sat == start.onchain_unconfirmed_sat + 40_000
    world.mine(1)
    assert backend.get_balances().onchain_confirmed_sat == start.onchain_confirmed_sat + 40_000
    outside = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    sent = backend.send_many(outputs=[(outside, 10_000)], target_conf=6, label="b")
    listed = {tx.txid: tx for tx in backend.list_transactions()}
    assert listed[sent.txid].confirmations == 0
    assert listed[sent.txid].outputs[0].ours is False
    assert backend.list_transactions(min_confirmations=1) != []
    assert sent.txid not in {tx.txid for tx in backend.list_transactions(min_confirmations=1)}
    assert (
        backend.get_balances().onchain_confirmed_sat
        == start.onchain_confirmed_sat + 40_000 - 10_000 - sent.fee_sat
    )


def test_send_many_refusals(db):
    backend = make_backend("broke", "type=fake;onchain_sat=1000")
    outside = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    cases = [
        ([(outside, 10_000)], "insufficient_balance"),
        ([("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", 500)], "invalid_address"),
        ([(outside, 100)], "dust_output"),
        ([(outside, 300), (outside, 300)], "duplicate_address"),
    ]
    for outputs, reason in cases:
        with pytest.raises(NodeRejected) as raised:
            backend.send_many(outputs=outputs, target_conf=6, label="x")
        assert raised.value.reason == reason


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_settlements_get_unique_gap_free_indexes_visible_in_order():
    backend = make_backend("busy")
    world = FakeWorld(node_name="busy", network=Network.REGTEST)
    count, threads_n = 40, 4
    invoices = [
        backend.create_invoice(amount_msat=1_000, memo="", expiry_s=600, label=f"c{n}")
        for n in range(count)
    ]
    errors: list[BaseException] = []
    observed: list[list[int]] = []
    done = threading.Event()

    def settle(chunk):
        try:
            for created in chunk:
                world.pay_from_outside(created.bolt11)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def watch():
        # A reader following settle_index > cursor must never see N+1 before N.
        try:
            cursor = 0
            seen: list[int] = []
            while not done.is_set() or cursor < count:
                indexes = list(
                    FakeInvoice.objects.filter(node__name="busy", settle_index__gt=cursor)
                    .order_by("settle_index")
                    .values_list("settle_index", flat=True)
                )
                for index in indexes:
                    assert index == cursor + 1, f"gap: saw {index} after {cursor}"
                    cursor = index
                    seen.append(index)
            observed.append(seen)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [
        threading.Thread(target=settle, args=(invoices[n::threads_n],)) for n in range(threads_n)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    watcher.join(timeout=30)
    assert not errors, errors
    indexes = sorted(
        FakeInvoice.objects.filter(node__name="busy").values_list("settle_index", flat=True)
    )
    assert indexes == list(range(1, count + 1))
    assert observed == [list(range(1, count + 1))]
    assert FakeNode.objects.get(name="busy").last_settle_index == count


def test_settle_index_counter_matches_invoices(backend, world):
    for n in range(3):
        world.pay_from_outside(
            backend.create_invoice(amount_msat=1_000, memo="", expiry_s=60, label=f"k{n}").bolt11
        )
    node = FakeNode.objects.get(name=backend.node_name)
    assert node.last_settle_index == 3
    assert sorted(node.invoices.values_list("settle_index", flat=True)) == [1, 2, 3]
