"""Money flows end to end against the simulated node: deposits, withdrawals, internal payments,
failures, hung payments, failover. The ledger's invariants are checked after each scenario."""

import hashlib
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.selectors import daily_withdrawn_msat
from ledger.checks import run_checks
from ledger.errors import InsufficientBalance
from ledger.selectors import account_balance_msat, user_balance_msat, user_pending_msat
from ledger.services import (
    EXPENSE_ROUTING_FEES,
    node_asset_account_get_or_create,
    system_account_get_or_create,
)
from lightning import errors
from lightning.backends import base
from lightning.backends.base import InvoiceState, InvoiceStatus, Network
from lightning.fakenode.models import OutsideInvoice
from lightning.invoices import sign_bolt11
from lightning.models import Invoice, Payment, PaymentStatus
from lightning.models import InvoiceStatus as DepositStatus
from lightning.nodes import NoNodeAvailable, node_backend
from lightning.payments import (
    internal_payment,
    payment_record_result,
    payment_succeed,
    payments_track_pending,
    withdrawal_create,
)
from lightning.services import (
    SettlementRejected,
    deposit_create,
    invoice_settle_from_node,
    invoices_poll_open,
)


@pytest.fixture(autouse=True)
def _ledger_stays_sound(db):
    yield
    report = run_checks()
    assert report.ok, report.violations


def fund(user, world, amount_msat: int) -> Invoice:
    invoice = deposit_create(user=user, amount_msat=amount_msat, memo="funding")
    world.pay(invoice.bolt11)
    invoices_poll_open()
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.SETTLED
    return invoice


# --- deposits ---------------------------------------------------------------------------


def test_deposit_credited_once(make_user, world, alpha):
    user = make_user()
    invoice = deposit_create(user=user, amount_msat=50_000, memo="coffee money")
    assert invoice.node == alpha
    assert str(user.uuid) in node_backend(alpha).decode_invoice(bolt11=invoice.bolt11).description
    world.pay(invoice.bolt11)
    assert invoices_poll_open()["settled"] == 1
    status = node_backend(alpha).lookup_invoice(payment_hash=invoice.payment_hash)
    # A second report of the same settlement (listener + poll, or two listeners) is a no-op.
    invoice_settle_from_node(node=alpha, status=status)
    invoice_settle_from_node(node=alpha, status=status)
    assert user_balance_msat(user=user) == 50_000
    assert (
        account_balance_msat(account=node_asset_account_get_or_create(node_name="alpha")) == 50_000
    )
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.SETTLED and invoice.amount_received_msat == 50_000


def test_deposit_expiry_on_node_equals_expires_at(make_user, alpha):
    invoice = deposit_create(user=make_user(), amount_msat=1_000)
    decoded = node_backend(alpha).decode_invoice(bolt11=invoice.bolt11)
    assert decoded.expires_at == invoice.expires_at


def test_amountless_deposit_credits_what_arrived(make_user, world):
    user = make_user()
    invoice = deposit_create(user=user, amount_msat=None)
    world.pay(invoice.bolt11, amount_msat=123_456)
    invoices_poll_open()
    assert user_balance_msat(user=user) == 123_456


def test_settlement_with_wrong_preimage_is_never_credited(make_user, alpha):
    user = make_user()
    invoice = deposit_create(user=user, amount_msat=1_000)
    forged = InvoiceStatus(
        payment_hash=invoice.payment_hash,
        state=InvoiceState.SETTLED,
        amount_msat=1_000,
        amount_received_msat=1_000,
        preimage="00" * 32,
        settled_at=None,
    )
    with pytest.raises(SettlementRejected):
        invoice_settle_from_node(node=alpha, status=forged)
    assert user_balance_msat(user=user) == 0


def test_settlement_of_a_hash_that_is_not_ours_is_ignored(alpha):
    preimage = "11" * 32
    foreign = InvoiceStatus(
        payment_hash=hashlib.sha256(bytes.fromhex(preimage)).hexdigest(),
        state=InvoiceState.SETTLED,
        amount_msat=5,
        amount_received_msat=5,
        preimage=preimage,
        settled_at=None,
    )
    assert invoice_settle_from_node(node=alpha, status=foreign) is None


def test_deposit_fails_over_to_a_healthy_node(make_user, world, beta_world, alpha, beta):
    world.down()
    invoice = deposit_create(user=make_user(), amount_msat=2_000)
    assert invoice.node == beta
    alpha.refresh_from_db()
    assert not alpha.healthy


def test_no_node_at_all_is_node_unavailable(make_user, world):
    world.down()
    with pytest.raises(NoNodeAvailable):
        deposit_create(user=make_user(), amount_msat=2_000)


# --- withdrawals ------------------------------------------------------------------------


def test_withdrawal_succeeds_and_refunds_unused_fee_reserve(make_user, world, alpha):
    user = make_user()
    fund(user, world, 1_000_000)
    payment = withdrawal_create(user=user, bolt11=world.invoice(200_000), max_fee_msat=20_000)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert 0 <= payment.fee_msat <= 20_000
    assert hashlib.sha256(bytes.fromhex(payment.preimage)).hexdigest() == payment.payment_hash
    assert user_balance_msat(user=user) == 1_000_000 - 200_000 - payment.fee_msat
    assert user_pending_msat(user=user) == 0


def test_failed_withdrawal_is_refunded_in_full(make_user, world):
    user = make_user()
    fund(user, world, 500_000)
    world.fail_next("no_route")
    payment = withdrawal_create(user=user, bolt11=world.invoice(100_000))
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_reason
    assert user_balance_msat(user=user) == 500_000
    assert daily_withdrawn_msat(user=user) == 0  # nor does it count against the daily limit


def _hung_withdrawal(make_user, world) -> tuple:
    """A user funded with 500,000 msat whose withdrawal of 100,000 (fee reserve 5,000) hangs
    at the node: pending, 105,000 reserved."""
    user = make_user()
    fund(user, world, 500_000)
    world.hang_next()
    payment = withdrawal_create(
        user=user, bolt11=world.invoice(100_000), max_fee_msat=5_000, wait_s=0.3
    )
    assert payment.status == PaymentStatus.PENDING
    return user, payment


def test_hung_withdrawal_stays_pending_until_the_tracker_learns_the_outcome(make_user, world):
    user, payment = _hung_withdrawal(make_user, world)
    assert user_balance_msat(user=user) == 500_000 - 105_000
    payments_track_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PENDING  # still in flight: never failed on a guess
    world.resolve(succeed=True)
    payments_track_pending()
    payments_track_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert user_balance_msat(user=user) == 500_000 - 100_000 - payment.fee_msat


def test_a_fee_above_the_reserve_is_the_operator_s_not_the_user_s(make_user, world, alpha):
    """A node that reports a fee above the limit it was given (it must not): the user pays
    the reserve and no more, sees that as the fee, and the rest is booked as the operator's
    routing-fee expense."""
    user, payment = _hung_withdrawal(make_user, world)
    payment = payment_succeed(payment=payment, fee_msat=7_500, preimage="ab" * 32)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.fee_msat == 5_000
    assert user_balance_msat(user=user) == 500_000 - 105_000
    expense = system_account_get_or_create(code=EXPENSE_ROUTING_FEES)
    assert account_balance_msat(account=expense) == 2_500
    node_account = node_asset_account_get_or_create(node_name=alpha.name)
    assert account_balance_msat(account=node_account) == 500_000 - 107_500
    # Once only: the tracker or a second report changes nothing.
    payment_succeed(payment=payment, fee_msat=7_500, preimage="ab" * 32)
    assert account_balance_msat(account=expense) == 2_500
    assert user_balance_msat(user=user) == 500_000 - 105_000


def test_a_success_without_a_true_preimage_is_not_recorded(make_user, world, alpha):
    """A node that reports success with a preimage that does not hash to the payment hash
    gives no proof of payment: the payment stays pending (never refunded: the node says the
    money left) until a report with the true preimage."""
    user, payment = _hung_withdrawal(make_user, world)
    for wrong in ("00" * 32, "not hex at all"):
        reported = base.PaymentResult(
            payment_hash=payment.payment_hash,
            status=base.PaymentStatus.SUCCEEDED,
            fee_msat=1_000,
            preimage=wrong,
        )
        assert payment_record_result(payment=payment, result=reported).status == (
            PaymentStatus.PENDING
        )
        assert user_balance_msat(user=user) == 500_000 - 105_000
    # The outside payee's true preimage (the simulated world keeps it): recorded.
    true_preimage = OutsideInvoice.objects.get(payment_hash=payment.payment_hash).preimage
    proven = base.PaymentResult(
        payment_hash=payment.payment_hash,
        status=base.PaymentStatus.SUCCEEDED,
        fee_msat=1_000,
        preimage=true_preimage,
    )
    payment = payment_record_result(payment=payment, result=proven)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.preimage == true_preimage
    assert user_balance_msat(user=user) == 500_000 - 101_000


def test_hung_withdrawal_that_finally_fails_is_refunded(make_user, world):
    user = make_user()
    fund(user, world, 300_000)
    world.hang_next()
    payment = withdrawal_create(user=user, bolt11=world.invoice(100_000), wait_s=0.3)
    assert daily_withdrawn_msat(user=user) == 100_000  # pending: it counts
    world.resolve(succeed=False)
    payments_track_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert user_balance_msat(user=user) == 300_000
    assert daily_withdrawn_msat(user=user) == 0


def test_fee_limit_given_to_node_never_exceeds_reserve(make_user, world):
    """The node gets the reserve as its fee limit: a route dearer than that (the simulated
    network charges 500 msat + 1000 ppm) is refused by the node, not paid and charged."""
    user = make_user()
    fund(user, world, 100_000)
    payment = withdrawal_create(user=user, bolt11=world.invoice(50_000), max_fee_msat=549)
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_reason == "fee_exceeds_limit"
    assert user_balance_msat(user=user) == 100_000
    exact = withdrawal_create(user=user, bolt11=world.invoice(50_000), max_fee_msat=550)
    assert exact.status == PaymentStatus.SUCCEEDED and exact.fee_msat == 550
    assert user_balance_msat(user=user) == 100_000 - 50_550


def test_tracker_has_no_age_cut_off(make_user, world):
    """A payment pending for two months is still asked about, never failed for its age."""
    user = make_user()
    fund(user, world, 200_000)
    world.hang_next()
    payment = withdrawal_create(
        user=user, bolt11=world.invoice(100_000), max_fee_msat=2_000, wait_s=0.2
    )
    long_ago = timezone.now() - timedelta(days=60)
    Payment.objects.filter(pk=payment.pk).update(created_at=long_ago, sent_at=long_ago)
    payments_track_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PENDING
    world.resolve(succeed=True)
    payments_track_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED


def test_payment_hash_is_unique_across_the_service(make_user, alpha):
    """Another user's invoice with a hash we already issued is refused by the database."""
    first = deposit_create(user=make_user(), amount_msat=1_000)
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.create(
            payment_hash=first.payment_hash,
            node=alpha,
            user=make_user(),
            bolt11=first.bolt11,
            label="another-label",
            amount_msat=1_000,
            expires_at=first.expires_at,
        )


def test_expired_deposit_is_marked_expired_and_cannot_be_paid(make_user, world, settings):
    settings.DEPOSIT_INVOICE_EXPIRY_S = 1
    invoice = deposit_create(user=make_user(), amount_msat=1_000)
    time.sleep(1.2)
    assert invoices_poll_open()["expired"] == 1
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.EXPIRED
    with pytest.raises(Exception):  # noqa: B017 - the outside payer's refusal
        world.pay(invoice.bolt11)


def test_withdrawal_fails_over_when_first_node_is_down(make_user, world, beta_world, alpha, beta):
    user = make_user()
    fund(user, world, 400_000)
    world.down()
    payment = withdrawal_create(user=user, bolt11=beta_world.invoice(100_000))
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.node == beta


def test_withdrawal_with_every_node_down_is_refunded_and_unavailable(make_user, world):
    user = make_user()
    fund(user, world, 400_000)
    bolt11 = world.invoice(100_000)
    world.down()
    with pytest.raises(NoNodeAvailable):
        withdrawal_create(user=user, bolt11=bolt11)
    assert user_balance_msat(user=user) == 400_000
    assert Payment.objects.get().status == PaymentStatus.FAILED


def test_insufficient_balance_changes_nothing(make_user, world):
    user = make_user()
    fund(user, world, 50_000)
    with pytest.raises(InsufficientBalance):
        withdrawal_create(user=user, bolt11=world.invoice(50_000))  # + fee reserve
    assert user_balance_msat(user=user) == 50_000
    assert not Payment.objects.exists()


def test_same_invoice_cannot_be_paid_twice(make_user, world):
    user = make_user()
    fund(user, world, 500_000)
    bolt11 = world.invoice(10_000)
    withdrawal_create(user=user, bolt11=bolt11)
    other = make_user()
    fund(other, world, 500_000)
    for payer in (user, other):  # the hash is unique service-wide, not per user
        with pytest.raises(errors.AlreadyPaid):
            withdrawal_create(user=payer, bolt11=bolt11)


@pytest.mark.parametrize(
    ("bolt11", "code"),
    [
        ("not an invoice", "invalid_invoice"),
        ("lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypq", "wrong_network"),
        ("lnbcrt1garbage", "invalid_invoice"),
        ("", "invalid_invoice"),
    ],
)
def test_bad_invoices_are_refused_with_a_code(make_user, world, bolt11, code):
    user = make_user()
    with pytest.raises(errors.FlowError) as raised:
        withdrawal_create(user=user, bolt11=bolt11)
    assert raised.value.code == code


def test_amountless_invoice_needs_an_amount_and_matching_amounts(make_user, world):
    user = make_user()
    fund(user, world, 500_000)
    with pytest.raises(errors.AmountRequired):
        withdrawal_create(user=user, bolt11=world.invoice(None))
    with pytest.raises(errors.AmountMismatch):
        withdrawal_create(user=user, bolt11=world.invoice(10_000), amount_msat=9_999)
    payment = withdrawal_create(user=user, bolt11=world.invoice(None), amount_msat=12_345)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.amount_msat == 12_345


def test_limit_per_withdrawal(make_user, world, settings):
    settings.WITHDRAWAL_MAX_MSAT = 10_000
    user = make_user()
    fund(user, world, 500_000)
    with pytest.raises(errors.LimitExceeded):
        withdrawal_create(user=user, bolt11=world.invoice(10_001))


def test_daily_limit(make_user, world, settings):
    settings.WITHDRAWAL_DAILY_MAX_MSAT = 25_000
    user = make_user()
    fund(user, world, 500_000)
    withdrawal_create(user=user, bolt11=world.invoice(20_000))
    with pytest.raises(errors.LimitExceeded):
        withdrawal_create(user=user, bolt11=world.invoice(6_000))


# --- internal payments ------------------------------------------------------------------


def test_internal_payment_moves_money_without_a_node(make_user, world, alpha):
    payer, payee = make_user(), make_user()
    fund(payer, world, 100_000)
    invoice = deposit_create(user=payee, amount_msat=30_000)
    payment = withdrawal_create(user=payer, bolt11=invoice.bolt11)
    assert payment.internal and payment.status == PaymentStatus.SUCCEEDED and payment.fee_msat == 0
    stored = Payment.objects.get(pk=payment.pk)
    assert stored.created_at == stored.resolved_at  # created and resolved at one instant
    assert user_balance_msat(user=payer) == 70_000
    assert user_balance_msat(user=payee) == 30_000
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.SETTLED and invoice.settled_internally
    # Cancelled on its node: an outside payer can no longer pay it as well.
    assert (
        node_backend(alpha).lookup_invoice(payment_hash=invoice.payment_hash).state
        == InvoiceState.CANCELED
    )
    with pytest.raises(Exception):  # noqa: B017
        world.pay(invoice.bolt11)
    invoices_poll_open()
    assert user_balance_msat(user=payee) == 30_000


@pytest.mark.parametrize("forged_amount_msat", [1, 30_000, 60_000])
def test_a_forged_copy_of_our_invoice_is_refused(make_user, world, alpha, forged_amount_msat):
    """An invoice carrying the payment hash of one of our deposit invoices, signed by someone
    else (a lower amount would settle the payee's invoice underpaid), is not our invoice:
    only the exact string our node issued is paid internally."""
    payer, payee = make_user(), make_user()
    fund(payer, world, 100_000)
    invoice = deposit_create(user=payee, amount_msat=30_000)
    forged = sign_bolt11(
        private_key=hashlib.sha256(b"someone else's key").digest(),
        network=Network.REGTEST,
        payment_hash=invoice.payment_hash,
        payment_secret="11" * 32,
        amount_msat=forged_amount_msat,
        expiry_s=3600,
        description="looks like a deposit",
    )
    with pytest.raises(errors.InvalidInvoice):
        withdrawal_create(user=payer, bolt11=forged)
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.OPEN
    assert user_balance_msat(user=payer) == 100_000 and user_balance_msat(user=payee) == 0
    assert not Payment.objects.filter(payment_hash=invoice.payment_hash).exists()
    # Still open on its node: the real invoice can still be paid, from outside or inside.
    state = node_backend(alpha).lookup_invoice(payment_hash=invoice.payment_hash).state
    assert state == InvoiceState.OPEN
    assert withdrawal_create(user=payer, bolt11=invoice.bolt11.upper()).internal


def test_a_damaged_copy_of_our_invoice_gets_the_checksum_error(make_user, world, alpha):
    """Our invoice with one character changed (its payment hash intact) is refused as a
    damaged invoice, the error a person can act on, and moves nothing."""
    payer, payee = make_user(), make_user()
    fund(payer, world, 100_000)
    invoice = deposit_create(user=payee, amount_msat=30_000)
    position = len(invoice.bolt11) - 10  # inside the signature
    swapped = "q" if invoice.bolt11[position] != "q" else "p"
    damaged = invoice.bolt11[:position] + swapped + invoice.bolt11[position + 1 :]
    with pytest.raises(errors.InvalidInvoice) as raised:
        withdrawal_create(user=payer, bolt11=damaged)
    assert "checksum" in raised.value.message
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.OPEN
    assert user_balance_msat(user=payer) == 100_000


@pytest.mark.parametrize("amount_msat", [1, 29_999, 30_001])
def test_an_internal_payment_pays_the_invoice_s_own_amount(make_user, world, alpha, amount_msat):
    """The service that moves the money refuses another amount itself, whatever its caller
    checked: the payee's invoice is never settled for an amount it did not ask for."""
    payer, payee = make_user(), make_user()
    fund(payer, world, 100_000)
    invoice = deposit_create(user=payee, amount_msat=30_000)
    with pytest.raises(errors.AmountMismatch):
        internal_payment(
            payer=payer, invoice=invoice, amount_msat=amount_msat, bolt11=invoice.bolt11
        )
    invoice.refresh_from_db()
    assert invoice.status == DepositStatus.OPEN
    assert user_balance_msat(user=payer) == 100_000 and user_balance_msat(user=payee) == 0
    state = node_backend(alpha).lookup_invoice(payment_hash=invoice.payment_hash).state
    assert state == InvoiceState.OPEN  # refused before the cancel on the node


def test_paying_your_own_deposit_invoice_is_refused(make_user, world):
    user = make_user()
    fund(user, world, 100_000)
    invoice = deposit_create(user=user, amount_msat=1_000)
    with pytest.raises(errors.OwnInvoice):
        withdrawal_create(user=user, bolt11=invoice.bolt11)


def test_internal_invoice_paid_once(make_user, world):
    payer, payee = make_user(), make_user()
    fund(payer, world, 100_000)
    invoice = deposit_create(user=payee, amount_msat=10_000)
    withdrawal_create(user=payer, bolt11=invoice.bolt11)
    with pytest.raises(errors.AlreadyPaid):
        withdrawal_create(user=payer, bolt11=invoice.bolt11)
    assert user_balance_msat(user=payer) == 90_000


def test_internal_payment_of_an_invoice_already_paid_from_outside(make_user, world):
    payer, payee = make_user(), make_user()
    fund(payer, world, 100_000)
    invoice = deposit_create(user=payee, amount_msat=10_000)
    world.pay(invoice.bolt11)  # paid on the node, not yet seen by us
    with pytest.raises(errors.AlreadyPaid):
        withdrawal_create(user=payer, bolt11=invoice.bolt11)
    assert user_balance_msat(user=payer) == 100_000
    assert user_balance_msat(user=payee) == 10_000


def test_daily_limit_is_shared_with_onchain_withdrawals(make_user, world, settings):
    from onchain.services import withdrawal_request
    from tests.onchain.wallet import random_address

    settings.WITHDRAWAL_DAILY_MAX_MSAT = 60_000_000
    user = make_user()
    fund(user, world, 200_000_000)
    withdrawal_request(user=user, address=random_address(), amount_sat=50_000)
    with pytest.raises(errors.LimitExceeded):
        withdrawal_create(user=user, bolt11=world.invoice(10_000_001))
    assert (
        withdrawal_create(user=user, bolt11=world.invoice(9_000_000)).status
        == PaymentStatus.SUCCEEDED
    )


def test_invoice_with_uri_prefix_and_upper_case_is_paid_in_canonical_form(make_user, world):
    user = make_user()
    fund(user, world, 100_000)
    bolt11 = world.invoice(10_000)
    payment = withdrawal_create(user=user, bolt11=f"  lightning:{bolt11.upper()} ")
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.bolt11 == bolt11
