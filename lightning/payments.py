"""Lightning withdrawals, internal payments and the tracker of pending payments.

A withdrawal's life, with no database transaction open across a node call:
1. validate (decode, network, expiry, amount, limits, not already paid) — nothing written;
2. one transaction: create the Payment row, count it against the daily limit (under the
   user's window row lock) and reserve amount + fee reserve from the user into
   withdrawals:in-flight (two-phase transfer `withdrawal:<id>`);
3. claim: set `sent_at` and the node in its own commit, only if still unsent — so a payment
   reaches a node at most once, whoever (request, tracker, a restarted worker) tries;
4. call the node with a fee limit equal to the fee reserved, so fees can never overdraw;
5. record the outcome: succeeded → post (real fee, unused reserve back); failed → void (all
   back); pending or unknown → leave it to the tracker, which asks the node until it is final.
Only an answer that proves the node did not send (unreachable before sending, or a refusal)
moves the payment to another node."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.selectors import limits_for
from accounts.services import (
    raise_if_over_daily_limit,
    withdrawal_limits_check,
    withdrawal_window_count,
    withdrawal_window_count_ctes,
    withdrawal_window_release,
)
from config.sqlrows import ModelSql
from ledger import services as ledger
from ledger.errors import InsufficientBalance
from ledger.models import Account
from lightning.backends import base
from lightning.errors import (
    AlreadyPaid,
    AmountMismatch,
    AmountRequired,
    InvalidAmount,
    InvalidInvoice,
    InvoiceExpired,
    OwnInvoice,
)
from lightning.invoices import (
    decode_bolt11,
    ensure_not_expired,
    normalize_bolt11,
    preimage_proves,
)
from lightning.models import Invoice, InvoiceStatus, Node, Payment, PaymentStatus
from lightning.nodes import (
    NoNodeAvailable,
    configured_network,
    mark_unreachable,
    node_backend,
    sending_nodes,
)
from lightning.selectors import WithdrawalFacts, withdrawal_facts
from lightning.services import invoice_refresh

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

# A payment the node says it has never seen is sent again (on the same node, which refuses a
# duplicate hash) once the first send can no longer be in flight.
NOT_FOUND_RESEND_AFTER = timedelta(seconds=120)


def withdrawal_key(payment_id: int) -> str:
    return f"withdrawal:{payment_id}"


def default_fee_reserve_msat(amount_msat: int) -> int:
    return max(
        settings.LIGHTNING_FEE_RESERVE_MIN_MSAT,
        amount_msat * settings.LIGHTNING_FEE_RESERVE_PPM // 1_000_000,
    )


# --- validation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidatedInvoice:
    bolt11: str
    payment_hash: str
    amount_msat: int
    # Read without a lock: `facts.ours` (one of our deposit invoices: paid internally), the
    # payer's balance for a clear early refusal (the ledger enforces it), accounts.
    facts: WithdrawalFacts


def withdrawal_validate(*, user: User, bolt11: str, amount_msat: int | None) -> ValidatedInvoice:
    """Everything that can be checked without money or a node. Raises a FlowError.
    One query: withdrawal_facts."""
    value = normalize_bolt11(bolt11)
    network = configured_network()
    # The facts need only the payment hash, read without the checksum and the signature
    # (2/3 of a decode's CPU). Those are checked before anything else is, unless the string
    # is, character for character, one of our own invoices: our node made and signed it.
    # A damaged string is decoded verified, for the error a person should see.
    try:
        decoded = decode_bolt11(value, network=network, verify=False)
    except InvalidInvoice:
        decoded = decode_bolt11(value, network=network)
    facts = withdrawal_facts(user=user, payment_hash=decoded.payment_hash)
    if facts.ours is None:
        decoded = decode_bolt11(value, network=network)
    elif not _is_our_invoice(value, ours=facts.ours):
        decode_bolt11(value, network=network)  # a damaged copy: the usual error
        # Our payment hash in an invoice our node did not issue: anyone can sign one, with
        # another amount (an underpaid deposit would be settled) or payee. Never paid.
        raise InvalidInvoice(
            "this invoice reuses the payment hash of another invoice but is not that invoice"
        )
    ensure_not_expired(decoded)
    if decoded.amount_msat is None:
        if amount_msat is None:
            raise AmountRequired("this invoice has no amount: give amount_msat")
        amount = amount_msat
    else:
        if amount_msat is not None and amount_msat != decoded.amount_msat:
            raise _amount_mismatch(invoice_amount_msat=decoded.amount_msat)
        amount = decoded.amount_msat
    if amount <= 0:
        raise InvalidAmount("the amount must be more than zero")
    withdrawal_limits_check(allowance=facts.allowance, amount_msat=amount)
    if facts.paid_before:
        raise AlreadyPaid("this invoice has already been paid")
    # The canonical form (no `lightning:` prefix, lower case) is what reaches the node.
    return ValidatedInvoice(
        bolt11=value,
        payment_hash=decoded.payment_hash,
        amount_msat=amount,
        facts=facts,
    )


def _amount_mismatch(*, invoice_amount_msat: int) -> AmountMismatch:
    return AmountMismatch(
        "amount_msat differs from the invoice's amount", invoice_amount_msat=invoice_amount_msat
    )


def _is_our_invoice(value: str, *, ours: Invoice) -> bool:
    """`value` (normalized) is the very invoice our node issued (in either case, as BOLT 11
    allows)."""
    return value == ours.bolt11 or value == normalize_bolt11(ours.bolt11)


# --- withdrawals -------------------------------------------------------------------------


def withdrawal_create(
    *,
    user: User,
    bolt11: str,
    amount_msat: int | None = None,
    max_fee_msat: int | None = None,
    wait_s: float | None = None,
    idempotency_key: str = "",
) -> Payment:
    """Pay a BOLT 11 invoice from the user's balance: internally when it is one of our own
    open deposit invoices, else through a node. Returns the Payment, final or pending.
    With an `idempotency_key`, a retry (even after a crash mid-request) returns the first
    payment and moves nothing."""
    earlier = _payment_with_key(user=user, idempotency_key=idempotency_key)
    if earlier is not None:
        return earlier
    invoice = withdrawal_validate(user=user, bolt11=bolt11, amount_msat=amount_msat)
    if invoice.facts.ours is not None:
        try:
            return internal_payment(
                payer=user,
                invoice=invoice.facts.ours,
                amount_msat=invoice.amount_msat,
                bolt11=invoice.bolt11,
                idempotency_key=idempotency_key,
                daily_limit_msat=invoice.facts.allowance.limits.daily_withdrawal_msat,
                payer_account=invoice.facts.payer_account,
                payee_account=invoice.facts.payee_account,
            )
        except (AlreadyPaid, IntegrityError):
            # A concurrent request with the same Idempotency-Key paid it first: its payment.
            earlier = _payment_with_key(user=user, idempotency_key=idempotency_key)
            if earlier is None:
                raise
            return earlier

    if max_fee_msat is not None and (max_fee_msat < 0 or max_fee_msat > invoice.amount_msat):
        raise InvalidAmount("max_fee_msat must be between 0 and the amount")
    fee_reserve = (
        max_fee_msat if max_fee_msat is not None else default_fee_reserve_msat(invoice.amount_msat)
    )
    try:
        payment = _reserve(
            user=user,
            invoice=invoice,
            fee_reserve_msat=fee_reserve,
            idempotency_key=idempotency_key,
        )
    except IntegrityError as error:
        if idempotency_key and "lightning_payment_idempotency" in str(error):
            return Payment.objects.get(user=user, idempotency_key=idempotency_key)
        raise
    return payment_send(payment=payment, wait_s=wait_s)


def _payment_with_key(*, user: User, idempotency_key: str) -> Payment | None:
    if not idempotency_key:
        return None
    return Payment.objects.filter(user=user, idempotency_key=idempotency_key).first()


def _reserve(
    *, user: User, invoice: ValidatedInvoice, fee_reserve_msat: int, idempotency_key: str
) -> Payment:
    try:
        with transaction.atomic():
            payment = Payment.objects.create(
                user=user,
                payment_hash=invoice.payment_hash,
                bolt11=invoice.bolt11,
                amount_msat=invoice.amount_msat,
                fee_reserve_msat=fee_reserve_msat,
                idempotency_key=idempotency_key,
            )
            # Counted under the user's window row lock, so concurrent withdrawals cannot pass
            # the daily limit together; at its creation time, which a refund gives back.
            withdrawal_window_count(
                user=user,
                amount_msat=invoice.amount_msat,
                daily_limit_msat=invoice.facts.allowance.limits.daily_withdrawal_msat,
                now=payment.created_at,
            )
            ledger.pending_transfer_reserve(
                key=withdrawal_key(payment.pk),
                kind="withdrawal_reserve",
                debit=ledger.user_account_get_or_create(user=user),
                holding=ledger.system_account_get_or_create(code=ledger.WITHDRAWALS_IN_FLIGHT),
                amount_msat=invoice.amount_msat + fee_reserve_msat,
                memo=f"Lightning withdrawal {invoice.payment_hash[:16]}",
                reference=("lightning.payment", str(payment.pk)),
                created_by=user,
            )
    except IntegrityError as error:
        if "lightning_payment_hash_live_once" in str(error):
            raise AlreadyPaid("this invoice has already been paid") from error
        raise
    except InsufficientBalance as error:
        error.details["fee_reserve_msat"] = fee_reserve_msat
        raise
    return payment


def _claim(*, payment_id: int, node: Node, resend_unknown: bool = False) -> bool:
    """Mark the payment as handed to `node`, in its own commit, only if nobody did already.
    With `resend_unknown`, re-claim a payment the node has no record of."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.status != PaymentStatus.PENDING:
            return False
        if payment.sent_at is not None and not (resend_unknown and payment.node_id == node.pk):
            return False
        payment.sent_at = timezone.now()
        payment.node = node
        payment.save(update_fields=["sent_at", "node"])
        return True


def _unclaim(*, payment_id: int) -> None:
    """The node proved it did not send: the payment may go to another node."""
    Payment.objects.filter(pk=payment_id, status=PaymentStatus.PENDING).update(
        sent_at=None, node=None
    )


def payment_send(
    *, payment: Payment, wait_s: float | None = None, resend_on: Node | None = None
) -> Payment:
    """Hand a reserved payment to a send node (or to `resend_on` for a re-send the node asked
    for by having no record of it) and record what it answers."""
    wait = settings.LIGHTNING_PAY_TIMEOUT_S if wait_s is None else wait_s
    candidates = (
        [resend_on]
        if resend_on
        else sending_nodes(amount_msat=payment.amount_msat + payment.fee_reserve_msat)
    )
    for node in candidates:
        if not _claim(payment_id=payment.pk, node=node, resend_unknown=resend_on is not None):
            payment.refresh_from_db()
            return payment
        try:
            result = node_backend(node).pay_invoice(
                bolt11=payment.bolt11,
                amount_msat=payment.amount_msat,
                max_fee_msat=payment.fee_reserve_msat,
                timeout_s=wait,
            )
        except (base.NodeUnreachable, base.NodeAuthFailed) as error:
            logger.warning(
                "payment %s: node %s unavailable before sending (%s)",
                payment.pk,
                node.name,
                error.code,
            )
            mark_unreachable(node, error)
            _unclaim(payment_id=payment.pk)
            continue
        except base.NodeRejected as error:
            if error.reason == "already_paid":
                # The node has this hash already: do not send elsewhere; track it there.
                logger.warning(
                    "payment %s: node %s already knows this payment", payment.pk, node.name
                )
                payment.refresh_from_db()
                return payment_track(payment=payment)
            logger.warning("payment %s: node %s refused (%s)", payment.pk, node.name, error.reason)
            return payment_fail(payment=payment, reason=error.reason or error.message)
        except base.OutcomeUnknown as error:
            logger.warning(
                "payment %s: outcome unknown on %s (%s); tracking",
                payment.pk,
                node.name,
                error.message,
            )
            payment.refresh_from_db()
            return payment
        return payment_record_result(payment=payment, result=result)
    if resend_on is None:
        if not candidates:
            logger.warning("payment %s: no send node can carry it now", payment.pk)
        # Nothing was sent anywhere: give the money back rather than keep it waiting.
        failed = payment_fail(
            payment=payment, reason="no node could send this payment", only_if_unsent=True
        )
        if failed.status != PaymentStatus.FAILED:
            return failed  # another worker has sent it meanwhile
        raise NoNodeAvailable("no Lightning node can send this payment right now")
    payment.refresh_from_db()
    return payment


def payment_record_result(*, payment: Payment, result: base.PaymentResult) -> Payment:
    if result.status == base.PaymentStatus.SUCCEEDED:
        if result.preimage and not preimage_proves(
            preimage=result.preimage, payment_hash=payment.payment_hash
        ):
            # The node says the money left, so it is never refunded; but this is no proof of
            # payment to record: left pending (the tracker asks again) for the operator.
            logger.error(
                "payment %s: the node reported success with a preimage that is not this"
                " payment's; left pending",
                payment.pk,
            )
            payment.refresh_from_db()
            return payment
        return payment_succeed(
            payment=payment, fee_msat=result.fee_msat or 0, preimage=result.preimage or ""
        )
    if result.status == base.PaymentStatus.FAILED:
        return payment_fail(payment=payment, reason=result.failure_reason or "payment failed")
    payment.refresh_from_db()
    return payment


def payment_succeed(*, payment: Payment, fee_msat: int, preimage: str) -> Payment:
    """Post the reservation: amount + real fee leave through the node, the unused fee reserve
    goes back to the user. A fee above the reserve cannot be taken from the user; it is
    booked as the operator's routing-fee expense (the node was told never to exceed it)."""
    with transaction.atomic():
        locked = Payment.objects.select_for_update(of=("self",))  # node is a nullable join
        payment = locked.select_related("node").get(pk=payment.pk)
        if payment.status == PaymentStatus.SUCCEEDED:
            return payment
        charged_fee = min(fee_msat, payment.fee_reserve_msat)
        node_account = ledger.node_asset_account_get_or_create(node_name=payment.node.name)
        ledger.pending_transfer_post(
            key=withdrawal_key(payment.pk),
            kind="withdrawal_settle",
            destinations=[(node_account, payment.amount_msat + charged_fee)],
            memo=f"Lightning withdrawal {payment.payment_hash[:16]} sent",
        )
        if fee_msat > charged_fee:
            logger.error(
                "payment %s: node charged %s msat over the fee limit",
                payment.pk,
                fee_msat - charged_fee,
            )
            ledger.transfer(
                idempotency_key=f"withdrawal:{payment.pk}:excess-fee",
                kind="routing_fee_excess",
                debit=ledger.system_account_get_or_create(code=ledger.EXPENSE_ROUTING_FEES),
                credit=node_account,
                amount_msat=fee_msat - charged_fee,
                reference=("lightning.payment", str(payment.pk)),
            )
        payment.status = PaymentStatus.SUCCEEDED
        payment.fee_msat = charged_fee  # what the user paid; any excess is in the ledger
        payment.preimage = preimage
        payment.resolved_at = timezone.now()
        payment.save(update_fields=["status", "fee_msat", "preimage", "resolved_at"])
        return payment


def payment_fail(*, payment: Payment, reason: str, only_if_unsent: bool = False) -> Payment:
    """Void the reservation: everything back to the user. Only for a payment the node said
    failed, or that no node ever received (`only_if_unsent`: re-checked under the lock, in
    case a tracker claimed it meanwhile)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment.pk)
        if payment.status != PaymentStatus.PENDING:
            return payment
        if only_if_unsent and payment.sent_at is not None:
            return payment
        withdrawal_window_release(
            user_id=payment.user_id, amount_msat=payment.amount_msat, counted_at=payment.created_at
        )
        ledger.pending_transfer_void(
            key=withdrawal_key(payment.pk),
            kind="withdrawal_refund",
            memo=f"Lightning withdrawal {payment.payment_hash[:16]} failed: {reason[:200]}",
        )
        payment.status = PaymentStatus.FAILED
        payment.failure_reason = reason[:300]
        payment.resolved_at = timezone.now()
        payment.save(update_fields=["status", "failure_reason", "resolved_at"])
        return payment


# --- the tracker -------------------------------------------------------------------------


def payment_track(*, payment: Payment) -> Payment:
    """Learn a pending payment's final state from its node. Never fails a payment on age or
    on an unknown answer: only the node's own FAILED does that."""
    if payment.status != PaymentStatus.PENDING or payment.internal:
        return payment
    if payment.sent_at is None:
        # Reserved, then the worker stopped before handing it to a node: send it now.
        return payment_send(payment=payment)
    node = payment.node
    result = node_backend(node).lookup_payment(payment_hash=payment.payment_hash)
    if result.status == base.PaymentStatus.NOT_FOUND:
        if timezone.now() - payment.sent_at > NOT_FOUND_RESEND_AFTER:
            logger.warning(
                "payment %s: node %s has no record of it; sending it there", payment.pk, node.name
            )
            return payment_send(payment=payment, resend_on=node)
        return payment
    return payment_record_result(payment=payment, result=result)


def payments_track_pending(*, limit: int = 500) -> dict[str, int]:
    counts = {"checked": 0, "succeeded": 0, "failed": 0, "pending": 0, "unreachable": 0}
    pending = Payment.objects.filter(status=PaymentStatus.PENDING, internal=False).select_related(
        "node"
    )
    for payment in pending.order_by("created_at")[:limit]:
        try:
            tracked = payment_track(payment=payment)
        except (base.NodeUnreachable, base.OutcomeUnknown, NoNodeAvailable):
            counts["unreachable"] += 1
            continue
        except base.LightningError as error:
            logger.warning("tracking payment %s: %s", payment.pk, error.message)
            continue
        counts["checked"] += 1
        counts[tracked.status] += 1
    return counts


# --- internal payments -------------------------------------------------------------------


_PAYMENT_SQL = ModelSql(Payment, "p")  # inserted without the ORM's per-query cost


def internal_payment(
    *,
    payer: User,
    invoice: Invoice,
    amount_msat: int,
    bolt11: str,
    idempotency_key: str = "",
    daily_limit_msat: int | None = None,
    payer_account: Account | None = None,
    payee_account: Account | None = None,
) -> Payment:
    """Pay another user's open deposit invoice from the payer's balance: one journal payer →
    payee, no fee, no routing. The invoice is cancelled on its node first, so an outside
    payer can no longer pay it too. The payment counts against the payer's daily limit
    (`daily_limit_msat`, when the caller has just read it). The accounts, when the caller has
    just read them (their balance only serves a clear early refusal: the ledger enforces
    it), save a query. On PostgreSQL the whole payment after the cancel is one statement
    (ledger.transfer_claimed), the count against the daily limit included."""
    if invoice.user_id == payer.pk:
        raise OwnInvoice("this is your own deposit invoice: you cannot pay it from your balance")
    if invoice.status == InvoiceStatus.SETTLED:
        raise AlreadyPaid("this invoice has already been paid")
    if invoice.status != InvoiceStatus.OPEN or invoice.expires_at <= timezone.now():
        raise InvoiceExpired("this invoice has expired")
    if invoice.amount_msat is not None and amount_msat != invoice.amount_msat:
        # The callers pass the amount of the very invoice (withdrawal_validate); anything else
        # would settle the payee's invoice for an amount it did not ask for.
        raise _amount_mismatch(invoice_amount_msat=invoice.amount_msat)
    payer_account = payer_account or ledger.user_account_get_or_create(user=payer)
    payee_account = payee_account or ledger.user_account_get_or_create(user=invoice.user)
    if payer_account.balance_msat < amount_msat:
        # Refused before the payee's invoice is cancelled on its node.
        raise InsufficientBalance(
            "the balance is too low for this amount",
            balance_msat=payer_account.balance_msat,
            required_msat=amount_msat,
        )

    try:
        node_backend(invoice.node).cancel_invoice(payment_hash=invoice.payment_hash)
    except base.NodeRejected as error:
        if error.reason == "not_found":
            raise
        # Settled on the node meanwhile: credit it the normal way and refuse this payment.
        invoice_refresh(invoice=invoice)
        raise AlreadyPaid("this invoice has already been paid") from error
    except (base.NodeUnreachable, base.NodeAuthFailed, base.OutcomeUnknown) as error:
        raise NoNodeAvailable("the payee's node is unavailable; try again shortly") from error

    if daily_limit_msat is None:
        daily_limit_msat = limits_for(payer).daily_withdrawal_msat
    now = timezone.now()
    payment = Payment(
        user=payer,
        payment_hash=invoice.payment_hash,
        bolt11=bolt11,
        amount_msat=amount_msat,
        fee_msat=0,
        internal=True,
        idempotency_key=idempotency_key,
        status=PaymentStatus.SUCCEEDED,
        created_at=now,
        resolved_at=now,
    )
    # The claim: the payment row is written only while the invoice is still open, and the
    # invoice row stays locked until the money has moved and the invoice is settled.
    claim_sql, claim_params = _PAYMENT_SQL.insert_if_sql(
        payment,
        source=Invoice._meta.db_table,
        condition="id = %s AND status = %s",
        params=[invoice.pk, InvoiceStatus.OPEN.value],
    )
    settle_sql, settle_params = _invoice_settled_columns(amount_msat=amount_msat, now=now)
    journal_fields = {
        "idempotency_key": f"internal:{invoice.payment_hash}",
        "kind": "internal_payment",
        "debit": payer_account,
        "credit": payee_account,
        "amount_msat": amount_msat,
        "memo": f"Internal payment {invoice.payment_hash[:16]}",
        "created_by": payer,
    }
    invoices = Invoice._meta.db_table
    if connection.vendor == "postgresql":
        # Claim, journal and settlement in one statement: one round trip, no BEGIN/COMMIT.
        window_ctes, window_params = withdrawal_window_count_ctes(
            user_id=payer.pk,
            amount_msat=amount_msat,
            daily_limit_msat=daily_limit_msat,
            now=now,
            after="claim",
        )
        try:
            claimed = ledger.transfer_claimed(
                claim_sql=claim_sql,
                claim_params=claim_params,
                guards=(window_ctes, window_params, "window_counted"),
                follow_up_sql=f"UPDATE {invoices} SET {settle_sql}, journal_id = j.id"
                f" FROM j WHERE {invoices}.id = %s RETURNING 1",
                follow_up_params=[*settle_params, invoice.pk],
                reference_type="lightning.payment",
                **journal_fields,
            )
        except IntegrityError as error:
            raise_if_over_daily_limit(error, user=payer, daily_limit_msat=daily_limit_msat)
            raise
        if claimed is None:
            raise AlreadyPaid("this invoice has already been paid")
        return _PAYMENT_SQL.inserted(payment, claimed[:1])

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(claim_sql, claim_params)
            if _PAYMENT_SQL.inserted(payment, cursor.fetchone()) is None:
                raise AlreadyPaid("this invoice has already been paid")
        withdrawal_window_count(
            user=payer, amount_msat=amount_msat, daily_limit_msat=daily_limit_msat, now=now
        )
        journal = ledger.transfer(
            reference=("lightning.payment", str(payment.pk)), **journal_fields
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {invoices} SET {settle_sql}, journal_id = %s WHERE id = %s",
                [*settle_params, journal.pk, invoice.pk],
            )
        return payment


def _invoice_settled_columns(*, amount_msat: int, now: datetime) -> tuple[str, list]:
    """The SET clause (and its parameters) of an invoice settled internally. Hand-written:
    on every internal payment's path."""
    return (
        "status = %s, settled_internally = %s, amount_received_msat = %s, settled_at = %s",
        [
            InvoiceStatus.SETTLED.value,
            True,
            amount_msat,
            connection.ops.adapt_datetimefield_value(now),
        ],
    )
