"""On-chain withdrawals in scheduled batches, and on-chain deposits. Every function that writes
is one or a few short transactions; no transaction is ever open across a call to a node.

A withdrawal's life:
1. request: validate the address for the network, the amount (dust, limits); under the user's
   row lock create the row and reserve amount + fee reserve into withdrawals:in-flight
   (two-phase transfer `onchain-withdrawal:<id>`). Status queued.
2. batch: one commit takes queued requests (`FOR UPDATE SKIP LOCKED`), creates a Batch with a
   unique label and links them (status batched). Two workers never take the same request.
3. claim: one conditional UPDATE sets the batch's `sent_at` only if it is still unclaimed;
   only the worker whose UPDATE matched calls the node, so a batch reaches send_many once.
4. send_many(outputs, target_conf, label), no transaction open.
5. record: txid and fee on the batch (status broadcast), then each request's pending
   transfer is posted: the node's on-chain asset is credited amount + fee share (capped at
   the fee reserve; a share above it is the operator's expense:onchain-fees), the unused
   reserve returns to the user.
6. track: confirmations from the node; after ONCHAIN_CONFIRMATIONS the batch is confirmed.

What the node's answer proves:
- NodeRejected / NodeUnreachable / NodeAuthFailed: nothing was sent (base.py's contract) →
  the batch fails and its requests go back to the queue (a refusal counts as an attempt;
  after ONCHAIN_MAX_ATTEMPTS the request fails and is refunded).
- OutcomeUnknown, any other error, or a crash: the batch stays `created` with `sent_at` set.
  The next round looks for it on the node by label, and by its exact outputs in the wallet's
  transactions (in case a backend lost the label). Found → recorded as broadcast. Not found →
  sent again, but only ONCHAIN_RESEND_AFTER_S after the claim: a node that received the first
  call may still be signing and publishing it, and until it has written the transaction to
  its wallet the label is not visible. Once every call that could carry the first send has
  ended (timeouts are far shorter), "not found" means it was never broadcast.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.selectors import withdrawal_allowance
from accounts.services import (
    withdrawal_limits_check,
    withdrawal_window_count,
    withdrawal_window_release,
)
from ledger import services as ledger
from ledger.errors import IdempotencyConflict, InsufficientBalance
from ledger.models import Account, AccountKind
from lightning.backends import base
from lightning.errors import InvalidAmount
from lightning.models import Node
from lightning.nodes import NoNodeAvailable, configured_network, mark_unreachable, node_backend
from lightning.nodes import onchain_nodes as _onchain_nodes
from onchain.addresses import validate_address
from onchain.errors import AmountTooSmall, NotCancelable
from onchain.fees import split_fee
from onchain.models import (
    Batch,
    BatchStatus,
    DepositAddress,
    DepositStatus,
    OnchainControl,
    OnchainDeposit,
    OnchainWithdrawal,
    WithdrawalStatus,
)

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

ONCHAIN_FEES = "expense:onchain-fees"
# Eclair's API sends to one address per call and keeps no label: a batch could neither be
# one transaction nor be found again after a crash, so Eclair nodes never send batches.
BATCH_INCAPABLE_KINDS = frozenset({"eclair"})
POST_CHUNK = 500  # requests posted per transaction (bounds how long user rows stay locked)
MAX_BATCHES_PER_ROUND = 1000

T = TypeVar("T")


def withdrawal_key(withdrawal_id: int) -> str:
    return f"onchain-withdrawal:{withdrawal_id}"


def deposit_key(*, txid: str, vout: int) -> str:
    return f"onchain-deposit:{txid}:{vout}"


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in_flight() -> Account:
    return ledger.system_account_get_or_create(code=ledger.WITHDRAWALS_IN_FLIGHT)


def _onchain_fee_expense() -> Account:
    return ledger.system_account_get_or_create(
        code=ONCHAIN_FEES, kind=AccountKind.EXPENSE, name="On-chain fees above users' reserves"
    )


# --- requests ------------------------------------------------------------------------------


def withdrawal_request(
    *, user: User, address: str, amount_sat: int, idempotency_key: str = ""
) -> OnchainWithdrawal:
    """Queue a withdrawal to `address` with its money reserved. With an `idempotency_key`,
    the same request again returns the first one (a different one with that key raises
    IdempotencyConflict). Raises a FlowError (nothing written) for bad input."""
    if idempotency_key:
        existing = OnchainWithdrawal.objects.filter(user=user, idempotency_key=idempotency_key)
        if (found := existing.first()) is not None:
            return _same_request(found, address=address, amount_sat=amount_sat)
    valid = validate_address(address, network=configured_network())
    if type(amount_sat) is not int or amount_sat <= 0:
        raise InvalidAmount("amount_sat must be a positive integer number of satoshi")
    if amount_sat < settings.ONCHAIN_DUST_LIMIT_SAT:
        raise AmountTooSmall(
            f"the smallest on-chain withdrawal is {settings.ONCHAIN_DUST_LIMIT_SAT} sat",
            min_amount_sat=settings.ONCHAIN_DUST_LIMIT_SAT,
        )
    amount_msat = amount_sat * 1000
    allowance = withdrawal_allowance(user=user)
    withdrawal_limits_check(allowance=allowance, amount_msat=amount_msat)
    fee_reserve_msat = settings.ONCHAIN_FEE_RESERVE_SAT * 1000
    user_account = ledger.user_account_get_or_create(user=user)
    try:
        with transaction.atomic():
            withdrawal = OnchainWithdrawal.objects.create(
                user=user,
                address=valid.address,
                amount_sat=amount_sat,
                fee_reserve_msat=fee_reserve_msat,
                idempotency_key=idempotency_key,
            )
            # Lightning and on-chain withdrawals share the daily limit; counted under the
            # user's window row lock, so concurrent requests cannot pass it together.
            withdrawal_window_count(
                user=user,
                amount_msat=amount_msat,
                daily_limit_msat=allowance.limits.daily_withdrawal_msat,
                now=withdrawal.created_at,
            )
            ledger.pending_transfer_reserve(
                key=withdrawal_key(withdrawal.pk),
                kind="onchain_withdrawal_reserve",
                debit=user_account,
                holding=_in_flight(),
                amount_msat=amount_msat + fee_reserve_msat,
                memo=f"On-chain withdrawal of {amount_sat} sat to {valid.address}",
                reference=("onchain.onchainwithdrawal", str(withdrawal.pk)),
                created_by=user,
            )
    except IntegrityError as error:
        if idempotency_key and "onchain_withdrawal_idempotency" in str(error):
            # A concurrent request with the same key won: answer with its withdrawal.
            found = OnchainWithdrawal.objects.get(user=user, idempotency_key=idempotency_key)
            return _same_request(found, address=address, amount_sat=amount_sat)
        raise
    except InsufficientBalance as error:
        error.details["fee_reserve_msat"] = fee_reserve_msat
        raise
    return withdrawal


def _same_request(found: OnchainWithdrawal, *, address: str, amount_sat: int) -> OnchainWithdrawal:
    same_address = isinstance(address, str) and address.strip().lower() == found.address.lower()
    if not same_address or amount_sat != found.amount_sat:
        raise IdempotencyConflict(
            "this idempotency key was already used for a different withdrawal",
            idempotency_key=found.idempotency_key,
        )
    return found


def withdrawal_cancel(
    *, withdrawal_id: int, by: User | None = None, reason: str = "canceled by staff"
) -> OnchainWithdrawal:
    """Refund a request that is still queued (not yet in a batch): everything back."""
    with transaction.atomic():
        withdrawal = OnchainWithdrawal.objects.select_for_update().get(pk=withdrawal_id)
        if withdrawal.status == WithdrawalStatus.CANCELED:
            return withdrawal
        if withdrawal.status != WithdrawalStatus.QUEUED:
            raise NotCancelable(
                f"only a queued withdrawal can be canceled; this one is {withdrawal.status}",
                status=withdrawal.status,
            )
        withdrawal_window_release(
            user_id=withdrawal.user_id,
            amount_msat=withdrawal.amount_sat * 1000,
            counted_at=withdrawal.created_at,
        )
        ledger.pending_transfer_void(
            key=withdrawal_key(withdrawal.pk),
            kind="onchain_withdrawal_refund",
            memo=f"On-chain withdrawal {withdrawal.pk} canceled: {reason[:200]}",
            created_by=by,
        )
        withdrawal.status = WithdrawalStatus.CANCELED
        withdrawal.failure_reason = reason[:300]
        withdrawal.resolved_at = timezone.now()
        withdrawal.save(update_fields=["status", "failure_reason", "resolved_at"])
        return withdrawal


# --- staff switch --------------------------------------------------------------------------


def control_get() -> OnchainControl:
    control, _ = OnchainControl.objects.get_or_create(pk=1)
    return control


def batching_set_paused(
    *, paused: bool, by: User | None = None, reason: str = ""
) -> OnchainControl:
    control = control_get()
    control.paused = paused
    control.reason = reason[:300]
    control.changed_by = by
    control.save(update_fields=["paused", "reason", "changed_by", "changed_at"])
    logger.warning("on-chain batching %s by %s", "paused" if paused else "resumed", by)
    return control


# --- the batch round -----------------------------------------------------------------------


@dataclass
class RoundReport:
    lines: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # batch ids broadcast this round
    recovered: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # outcome unknown, left for recovery

    def say(self, line: str) -> None:
        self.lines.append(line)
        logger.info("onchain batch round: %s", line)


def batch_round(*, force: bool = False) -> RoundReport:
    """One round of the batch job: confirmations of broadcast batches, recovery of batches
    whose send outcome is unknown, then new batches from the queue. `force` sends whatever
    is queued now, ignoring the thresholds and the pause switch (staff's "run now")."""
    report = RoundReport()
    batches_track(report=report)
    paused = control_get().paused and not force
    batches_recover(report=report, may_send=not paused)
    if paused:
        report.say("batching is paused: no new batch sent")
        return report
    batches_send_queued(report=report, force=force)
    return report


def batching_node() -> Node | None:
    for node in _onchain_nodes():
        if node.kind not in BATCH_INCAPABLE_KINDS:
            return node
    return None


def batches_send_queued(*, report: RoundReport, force: bool = False) -> None:
    node = batching_node()
    if node is None:
        queued = OnchainWithdrawal.objects.filter(status=WithdrawalStatus.QUEUED).count()
        if queued:
            report.say(f"{queued} queued, but no enabled on-chain node can send batches")
        return
    for _ in range(MAX_BATCHES_PER_ROUND):
        batch = _form_batch(node=node, force=force, report=report)
        if batch is None:
            return
        outcome = _send(batch=batch, expected_sent_at=None, report=report)
        if outcome != "broadcast":
            return  # the node refused or is unreachable: do not form more batches now


def _form_batch(*, node: Node, force: bool, report: RoundReport) -> Batch | None:
    """Take queued requests and link them to a new batch, in one commit, before any node
    call. SKIP LOCKED: a concurrent worker takes other requests or none."""
    max_outputs = settings.ONCHAIN_BATCH_MAX_OUTPUTS
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            OnchainWithdrawal.objects.select_for_update(skip_locked=True)
            .filter(status=WithdrawalStatus.QUEUED)
            .order_by("id")
            .values_list("id", "address", "amount_sat", "created_at")[:max_outputs]
        )
        if not rows:
            return None
        if not force and len(rows) < settings.ONCHAIN_BATCH_MIN_OUTPUTS:
            waited = now - rows[0][3]
            if waited < timedelta(minutes=settings.ONCHAIN_BATCH_MAX_WAIT_MIN):
                report.say(
                    f"waiting: {len(rows)} queued (< {settings.ONCHAIN_BATCH_MIN_OUTPUTS}), "
                    f"oldest {int(waited.total_seconds() // 60)} min "
                    f"(< {settings.ONCHAIN_BATCH_MAX_WAIT_MIN} min)"
                )
                return None
        # One output per address per transaction (LND's SendMany takes a map; a recipient
        # crediting by output must see separate payments): repeats wait for the next batch.
        taken, addresses = [], set()
        for row in rows:
            if row[1] not in addresses:
                addresses.add(row[1])
                taken.append(row)
        batch = Batch.objects.create(
            node=node,
            label=f"satledger-batch-{uuid.uuid4().hex}",
            outputs=[[address, amount, wid] for wid, address, amount, _ in taken],
            output_count=len(taken),
            total_sat=sum(row[2] for row in taken),
        )
        ids = [row[0] for row in taken]
        linked = 0
        for chunk in _chunks(ids, 5000):
            linked += OnchainWithdrawal.objects.filter(
                id__in=chunk, status=WithdrawalStatus.QUEUED
            ).update(status=WithdrawalStatus.BATCHED, batch=batch, batched_at=now)
        if linked != len(ids):  # cannot happen under the row locks; never send a half batch
            raise RuntimeError(f"batch {batch.pk}: linked {linked} of {len(ids)} requests")
    return batch


def _claim(*, batch_id: int, expected_sent_at) -> bool:
    """Mark the batch as being sent, in its own commit, only if its claim is still what we
    saw (unclaimed, or the stale claim recovery found). Exactly one worker's UPDATE matches."""
    claimed = Batch.objects.filter(pk=batch_id, status=BatchStatus.CREATED)
    if expected_sent_at is None:
        claimed = claimed.filter(sent_at__isnull=True)
    else:
        claimed = claimed.filter(sent_at=expected_sent_at)
    return claimed.update(sent_at=timezone.now(), send_attempts=F("send_attempts") + 1) == 1


def _outputs(batch: Batch) -> list[tuple[str, int]]:
    return [(address, amount) for address, amount, _ in batch.outputs]


def _send(*, batch: Batch, expected_sent_at, report: RoundReport) -> str:
    """Claim, call send_many, record. Returns broadcast | failed | unknown | not_claimed."""
    if not _claim(batch_id=batch.pk, expected_sent_at=expected_sent_at):
        return "not_claimed"
    node = batch.node
    try:
        tx = node_backend(node).send_many(
            outputs=_outputs(batch), target_conf=settings.ONCHAIN_TARGET_CONF, label=batch.label
        )
    except base.NodeRejected as error:
        logger.warning("batch %s: node %s refused it (%s)", batch.pk, node.name, error.reason)
        _fail_batch(batch=batch, reason=f"refused: {error.reason or error.message}", count=True)
        report.failed.append(batch.pk)
        report.say(f"batch {batch.pk}: node refused ({error.reason or error.message}); requeued")
        return "failed"
    except (base.NodeUnreachable, base.NodeAuthFailed) as error:
        mark_unreachable(node, error)
        _fail_batch(batch=batch, reason=f"node unavailable: {error.code}", count=False)
        report.failed.append(batch.pk)
        report.say(f"batch {batch.pk}: node {node.name} unavailable; requeued")
        return "failed"
    except Exception as error:
        # OutcomeUnknown or anything unexpected: it may have gone out. Recovery decides.
        logger.error("batch %s: outcome unknown (%s)", batch.pk, type(error).__name__)
        report.unknown.append(batch.pk)
        report.say(f"batch {batch.pk}: outcome unknown; will look for it on the node")
        return "unknown"
    batch_record_broadcast(batch=batch, tx=tx)
    report.sent.append(batch.pk)
    batch.refresh_from_db()
    report.say(
        f"batch {batch.pk}: sent {batch.output_count} outputs, {batch.total_sat} sat, "
        f"txid {batch.txid}, fee {batch.fee_sat} sat"
    )
    return "broadcast"


def _fail_batch(*, batch: Batch, reason: str, count: bool) -> None:
    """The node proved nothing was sent: the batch fails, its requests go back to the queue
    (or, after too many refusals, fail and are refunded)."""
    now = timezone.now()
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.status != BatchStatus.CREATED:
            return
        locked.status = BatchStatus.FAILED
        locked.error = reason[:300]
        locked.failed_at = now
        locked.save(update_fields=["status", "error", "failed_at"])
        members = OnchainWithdrawal.objects.filter(batch=locked, status=WithdrawalStatus.BATCHED)
        if count:
            members.update(attempts=F("attempts") + 1)
        refunded = list(
            members.filter(attempts__gte=settings.ONCHAIN_MAX_ATTEMPTS)
            .order_by("user_id", "id")  # window rows in the order every count locks them
            .values_list("id", "user_id", "amount_sat", "created_at")
        )
        exhausted = [withdrawal_id for withdrawal_id, *_ in refunded]
        for _, user_id, amount_sat, created_at in refunded:
            withdrawal_window_release(
                user_id=user_id, amount_msat=amount_sat * 1000, counted_at=created_at
            )
        if exhausted:
            ledger.user_accounts_lock(user_ids={user_id for _, user_id, *_ in refunded})
        for withdrawal_id in exhausted:
            ledger.pending_transfer_void(
                key=withdrawal_key(withdrawal_id),
                kind="onchain_withdrawal_refund",
                memo=f"On-chain withdrawal {withdrawal_id} failed: {reason[:200]}",
            )
        OnchainWithdrawal.objects.filter(id__in=exhausted).update(
            status=WithdrawalStatus.FAILED,
            batch=None,
            failure_reason=reason[:300],
            resolved_at=now,
        )
        members.update(status=WithdrawalStatus.QUEUED, batch=None, batched_at=None)
    batch.status = BatchStatus.FAILED


def batch_record_broadcast(*, batch: Batch, tx: base.OnchainTransaction) -> Batch:
    """The node has the transaction: record txid and fee, then post the requests."""
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.status == BatchStatus.CREATED:
            locked.status = BatchStatus.BROADCAST
            locked.txid = tx.txid
            locked.fee_sat = tx.fee_sat
            locked.confirmations = max(tx.confirmations, 0)
            locked.block_height = tx.block_height
            locked.broadcast_at = timezone.now()
            locked.error = ""
            locked.save(
                update_fields=[
                    "status",
                    "txid",
                    "fee_sat",
                    "confirmations",
                    "block_height",
                    "broadcast_at",
                    "error",
                ]
            )
        elif locked.txid != tx.txid:
            logger.error(
                "batch %s: node reports txid %s, we recorded %s", batch.pk, tx.txid, locked.txid
            )
    batch_post_withdrawals(batch_id=batch.pk)
    return locked


def batch_post_withdrawals(*, batch_id: int) -> int:
    """Post the pending transfer of every request of a broadcast batch not posted yet
    (idempotent: a crash half-way is finished by the next round). Needs the fee."""
    batch = Batch.objects.select_related("node").get(pk=batch_id)
    if batch.status not in (BatchStatus.BROADCAST, BatchStatus.CONFIRMED) or batch.fee_sat is None:
        return 0
    members = list(
        OnchainWithdrawal.objects.filter(batch=batch)
        .order_by("id")
        .values_list("id", "amount_sat", "fee_reserve_msat", "status", "user_id")
    )
    if not any(row[3] == WithdrawalStatus.BATCHED for row in members):
        return 0
    # The split is over the whole (fixed) membership, so a resumed posting gets the same parts.
    shares = split_fee(fee_msat=batch.fee_sat * 1000, amounts=[row[1] for row in members])
    todo = [
        (row, share)
        for row, share in zip(members, shares, strict=True)
        if row[3] == WithdrawalStatus.BATCHED
    ]
    node_account = ledger.node_asset_account_get_or_create(
        node_name=batch.node.name, rail="onchain"
    )
    expense = _onchain_fee_expense()
    posted = 0
    for chunk in _chunks(todo, POST_CHUNK):
        with transaction.atomic():
            Batch.objects.select_for_update().filter(pk=batch.pk).first()
            still = set(
                OnchainWithdrawal.objects.filter(
                    id__in=[row[0] for row, _ in chunk], status=WithdrawalStatus.BATCHED
                ).values_list("id", flat=True)
            )
            posts, excess, updates = [], [], []
            for (withdrawal_id, amount_sat, reserve_msat, _, _), share in chunk:
                if withdrawal_id not in still:
                    continue
                charged = min(share, reserve_msat)
                posts.append(
                    ledger.PendingPost(
                        key=withdrawal_key(withdrawal_id),
                        destinations=[(node_account, amount_sat * 1000 + charged)],
                        memo=f"On-chain withdrawal {withdrawal_id} sent in {batch.txid}",
                    )
                )
                if share > charged:
                    excess.append((withdrawal_id, share - charged))
                updates.append((withdrawal_id, share, charged))
            # One set of statements for the whole chunk (locks in the ledger's order).
            ledger.pending_transfers_post_many(posts=posts, kind="onchain_withdrawal_settle")
            for withdrawal_id, amount_msat in excess:
                # The node chose a fee above what the user reserved: never the user's.
                ledger.transfer(
                    idempotency_key=f"{withdrawal_key(withdrawal_id)}:excess-fee",
                    kind="onchain_fee_excess",
                    debit=expense,
                    credit=node_account,
                    amount_msat=amount_msat,
                    memo=f"On-chain fee above the reserve, withdrawal {withdrawal_id}",
                    reference=("onchain.onchainwithdrawal", str(withdrawal_id)),
                )
            _mark_broadcast(updates)
            posted += len(updates)
    return posted


def _mark_broadcast(rows: list[tuple[int, int, int]]) -> None:
    """Set status broadcast and the fee parts of many requests in one statement (UPDATE ...
    FROM VALUES, PostgreSQL and SQLite >= 3.33): Django's bulk_update builds a CASE per row
    and costs more Python time than the whole ledger posting."""
    if not rows:
        return
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE onchain_onchainwithdrawal SET status = %s, fee_share_msat = v.column2, "
            f"fee_msat = v.column3 FROM (VALUES {values}) AS v "
            "WHERE onchain_onchainwithdrawal.id = v.column1 "
            "AND onchain_onchainwithdrawal.status = %s",
            [
                WithdrawalStatus.BROADCAST,
                *(value for row in rows for value in row),
                WithdrawalStatus.BATCHED,
            ],
        )


# --- recovery and tracking -----------------------------------------------------------------


def _find_on_node(batch: Batch, backend: base.LightningBackend) -> base.OnchainTransaction | None:
    """The batch's transaction, by label, else by its exact outputs among the wallet's
    transactions (a backend that lost or never kept the label). A transaction another batch
    already recorded is never this one: a user withdrawing the same amount to the same
    address again makes a later batch whose outputs an earlier transaction also pays."""
    tx = backend.lookup_transaction(label=batch.label)
    if tx is not None:
        return tx
    wanted = Counter((address, amount) for address, amount in _outputs(batch))
    candidates = backend.list_transactions()
    taken: set[str] = set()
    for chunk in _chunks([c.txid for c in candidates], 1000):
        taken.update(
            Batch.objects.filter(txid__in=chunk).exclude(pk=batch.pk).values_list("txid", flat=True)
        )
    for candidate in candidates:
        if candidate.txid in taken:
            continue
        paid = Counter((output.address, output.amount_sat) for output in candidate.outputs)
        if all(paid[output] >= count for output, count in wanted.items()):
            logger.error("batch %s: found by its outputs, not its label", batch.pk)
            return candidate
    return None


def batches_recover(*, report: RoundReport, may_send: bool = True) -> None:
    """Batches still `created`: unclaimed ones are sent (their worker stopped before the
    claim); claimed ones are looked for on the node, and sent again only when the node
    provably never broadcast them (see the module docstring)."""
    for batch in Batch.objects.filter(status=BatchStatus.CREATED).select_related("node"):
        if batch.sent_at is None:
            if may_send:
                _send(batch=batch, expected_sent_at=None, report=report)
            continue
        try:
            tx = _find_on_node(batch, node_backend(batch.node))
        except base.LightningError as error:
            report.say(f"batch {batch.pk}: cannot ask node {batch.node.name} ({error.code})")
            continue
        if tx is not None:
            batch_record_broadcast(batch=batch, tx=tx)
            report.recovered.append(batch.pk)
            report.say(f"batch {batch.pk}: found on the node as {tx.txid}; recorded")
            continue
        waited = timezone.now() - batch.sent_at
        if waited < timedelta(seconds=settings.ONCHAIN_RESEND_AFTER_S):
            report.say(f"batch {batch.pk}: not on the node yet; checking again later")
        elif may_send:
            logger.warning("batch %s: never reached the node; sending it again", batch.pk)
            _send(batch=batch, expected_sent_at=batch.sent_at, report=report)


def batches_track(*, report: RoundReport) -> None:
    """Confirmations of broadcast batches; finish postings a crash left half done.

    A transaction the node no longer knows (dropped from the mempool, or replaced) is not
    refunded or re-sent automatically: the original may still confirm (anyone holding it can
    rebroadcast it), and a replacement may pay the same outputs. `missing_since` is set, an
    error is logged and the admin shows it; staff resolve it once the node proves the inputs
    are spent elsewhere."""
    for batch in Batch.objects.filter(status=BatchStatus.BROADCAST).select_related("node"):
        try:
            tx = node_backend(batch.node).lookup_transaction(txid=batch.txid)
        except base.LightningError as error:
            report.say(f"batch {batch.pk}: cannot ask node {batch.node.name} ({error.code})")
            continue
        if tx is None:
            if batch.missing_since is None:
                Batch.objects.filter(pk=batch.pk).update(missing_since=timezone.now())
            logger.error("batch %s: transaction %s is missing from its node", batch.pk, batch.txid)
            report.say(f"batch {batch.pk}: transaction {batch.txid} MISSING from the node")
            continue
        changes = {
            "confirmations": max(tx.confirmations, 0),
            "block_height": tx.block_height,
            "missing_since": None,
        }
        if batch.fee_sat is None and tx.fee_sat is not None:
            changes["fee_sat"] = tx.fee_sat
        Batch.objects.filter(pk=batch.pk).update(**changes)
        batch_post_withdrawals(batch_id=batch.pk)
        if tx.confirmations >= settings.ONCHAIN_CONFIRMATIONS and _confirm(batch_id=batch.pk):
            report.confirmed.append(batch.pk)
            report.say(f"batch {batch.pk}: confirmed ({tx.confirmations} confirmations)")


def _confirm(*, batch_id: int) -> bool:
    now = timezone.now()
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch_id)
        if batch.status != BatchStatus.BROADCAST:
            return False
        if batch.withdrawals.filter(status=WithdrawalStatus.BATCHED).exists():
            return False  # postings not finished (fee unknown yet): confirm next round
        batch.status = BatchStatus.CONFIRMED
        batch.confirmed_at = now
        batch.save(update_fields=["status", "confirmed_at"])
        batch.withdrawals.filter(status=WithdrawalStatus.BROADCAST).update(
            status=WithdrawalStatus.CONFIRMED, resolved_at=now
        )
        return True


# --- deposits ------------------------------------------------------------------------------


def deposit_address_get(*, user: User) -> DepositAddress:
    """The user's unused deposit address on an enabled on-chain node, or a fresh one."""

    def unused() -> DepositAddress | None:
        return (
            DepositAddress.objects.filter(
                user=user, used_at=None, node__enabled=True, node__can_onchain=True
            )
            .select_related("node")
            .first()
        )

    if (existing := unused()) is not None:
        return existing
    for node in _onchain_nodes():
        try:
            address = node_backend(node).new_address()
        except (base.NodeUnreachable, base.NodeAuthFailed, base.OutcomeUnknown) as error:
            mark_unreachable(node, error)
            continue
        break
    else:
        raise NoNodeAvailable("no on-chain node can give an address right now")
    ledger.user_account_get_or_create(user=user)  # the row the lock below takes
    with transaction.atomic():
        # Under the user's row lock: two requests at once hand out one address (the other
        # fresh address just stays unused in the node's wallet).
        ledger.user_accounts_lock(user_ids={user.pk})
        if (existing := unused()) is not None:
            return existing
        return DepositAddress.objects.create(user=user, node=node, address=address)


@dataclass
class ScanReport:
    seen: int = 0
    credited: int = 0
    pending: int = 0
    dropped: int = 0
    unreachable: list[str] = field(default_factory=list)


def deposits_scan() -> ScanReport:
    """Look at every on-chain node's wallet transactions: record outputs paying our deposit
    addresses, credit them once after ONCHAIN_DEPOSIT_CONFIRMATIONS."""
    report = ScanReport()
    nodes = Node.objects.filter(enabled=True, deposit_addresses__isnull=False).distinct()
    for node in nodes:
        try:
            backend = node_backend(node)
            transactions = backend.list_transactions()
        except base.LightningError as error:
            report.unreachable.append(node.name)
            logger.warning("deposit scan: node %s: %s", node.name, error.code)
            continue
        candidates = {o.address for tx in transactions for o in tx.outputs}
        known: dict[str, DepositAddress] = {}
        for chunk in _chunks(sorted(candidates), 1000):
            known.update(
                (row.address, row)
                for row in DepositAddress.objects.filter(node=node, address__in=chunk)
            )
        seen: set[tuple[str, int]] = set()
        for tx in transactions:
            # `vout` is the output's position: backends list every output in order.
            for vout, output in enumerate(tx.outputs):
                if output.address in known and output.amount_sat > 0:
                    seen.add((tx.txid, vout))
                    _deposit_seen(
                        node=node,
                        address=known[output.address],
                        tx=tx,
                        vout=vout,
                        amount_sat=output.amount_sat,
                        report=report,
                    )
        _deposits_missing(node=node, backend=backend, seen=seen, report=report)
    return report


def _deposit_seen(
    *,
    node: Node,
    address: DepositAddress,
    tx: base.OnchainTransaction,
    vout: int,
    amount_sat: int,
    report: ScanReport,
) -> None:
    report.seen += 1
    confirmations = max(tx.confirmations, 0)
    deposit, created = OnchainDeposit.objects.get_or_create(
        txid=tx.txid,
        vout=vout,
        defaults={
            "deposit_address": address,
            "user_id": address.user_id,
            "node": node,
            "amount_sat": amount_sat,
            "confirmations": confirmations,
        },
    )
    if address.used_at is None:
        # Funds arrived: the next request for an address gets a fresh one.
        DepositAddress.objects.filter(pk=address.pk, used_at=None).update(used_at=timezone.now())
    if deposit.status == DepositStatus.CREDITED:
        return
    if not created and (deposit.confirmations != confirmations or deposit.status != "pending"):
        OnchainDeposit.objects.filter(pk=deposit.pk).exclude(status=DepositStatus.CREDITED).update(
            confirmations=confirmations, status=DepositStatus.PENDING
        )
    if confirmations >= settings.ONCHAIN_DEPOSIT_CONFIRMATIONS:
        if deposit_credit(deposit_id=deposit.pk, confirmations=confirmations):
            report.credited += 1
    else:
        report.pending += 1


def deposit_credit(*, deposit_id: int, confirmations: int) -> bool:
    """Credit the deposit to its user, once (row lock + the journal's unique key)."""
    with transaction.atomic():
        deposit = (
            OnchainDeposit.objects.select_for_update()
            .select_related("node", "user")
            .get(pk=deposit_id)
        )
        if deposit.status == DepositStatus.CREDITED:
            return False
        journal = ledger.transfer(
            idempotency_key=deposit_key(txid=deposit.txid, vout=deposit.vout),
            kind="onchain_deposit",
            debit=ledger.node_asset_account_get_or_create(
                node_name=deposit.node.name, rail="onchain"
            ),
            credit=ledger.user_account_get_or_create(user=deposit.user),
            amount_msat=deposit.amount_msat,
            memo=f"On-chain deposit {deposit.txid}:{deposit.vout}",
            reference=("onchain.onchaindeposit", str(deposit.pk)),
        )
        deposit.status = DepositStatus.CREDITED
        deposit.journal = journal
        deposit.confirmations = confirmations
        deposit.credited_at = timezone.now()
        deposit.save(update_fields=["status", "journal", "confirmations", "credited_at"])
        return True


def _deposits_missing(
    *, node: Node, backend: base.LightningBackend, seen: set[tuple[str, int]], report: ScanReport
) -> None:
    """Pending deposits the wallet no longer lists: dropped if the node does not know the
    transaction at all (double-spent or evicted); a later scan revives them if it returns."""
    for deposit in OnchainDeposit.objects.filter(node=node, status=DepositStatus.PENDING):
        if (deposit.txid, deposit.vout) in seen:
            continue
        try:
            tx = backend.lookup_transaction(txid=deposit.txid)
        except base.LightningError:
            continue
        if tx is None:
            OnchainDeposit.objects.filter(pk=deposit.pk, status=DepositStatus.PENDING).update(
                status=DepositStatus.DROPPED
            )
            report.dropped += 1
