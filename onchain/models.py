"""On-chain withdrawals and their batch transactions; deposit addresses and deposits.

Money lives in the ledger; these rows record requests, what was sent to a node and what it
answered. A withdrawal's funds are reserved by the two-phase transfer
`onchain-withdrawal:<id>` (amount + fee reserve into withdrawals:in-flight), posted when its
batch is broadcast; a deposit is credited once by the journal `onchain-deposit:<txid>:<vout>`."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from lightning.models import Node


class WithdrawalStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    BATCHED = "batched", "In a batch being sent"
    BROADCAST = "broadcast", "Broadcast"
    CONFIRMED = "confirmed", "Confirmed"
    FAILED = "failed", "Failed (refunded)"
    CANCELED = "canceled", "Canceled (refunded)"


class BatchStatus(models.TextChoices):
    CREATED = "created", "Created (not known to be sent)"
    BROADCAST = "broadcast", "Broadcast"
    CONFIRMED = "confirmed", "Confirmed"
    FAILED = "failed", "Failed (nothing sent)"


class Batch(models.Model):
    """One transaction paying many withdrawals. Created with its withdrawals in one commit
    before the node is called; `sent_at` is the claim (set in its own commit by the one worker
    that may call send_many); `label` lets a crashed send be found on the node."""

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="onchain_batches")
    label = models.CharField(max_length=100, unique=True)
    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.CREATED
    )
    # Exactly what is handed to send_many: [[address, amount_sat], ...].
    outputs = models.JSONField(default=list)
    output_count = models.PositiveIntegerField(default=0)
    total_sat = models.BigIntegerField(default=0)
    txid = models.CharField(max_length=64, blank=True)
    fee_sat = models.BigIntegerField(null=True, blank=True)
    confirmations = models.IntegerField(default=0)
    block_height = models.IntegerField(null=True, blank=True)
    send_attempts = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # Set while the node no longer knows the broadcast transaction (dropped or replaced).
    missing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    broadcast_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["status"],
                name="onchain_batch_open",
                condition=Q(status__in=["created", "broadcast"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["txid"], condition=~Q(txid=""), name="onchain_batch_txid_once"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["created", "failed"]) | ~Q(txid=""),
                name="onchain_batch_broadcast_has_txid",
            ),
            models.CheckConstraint(
                condition=Q(fee_sat__isnull=True) | Q(fee_sat__gte=0),
                name="onchain_batch_fee_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.status}, {self.output_count} outputs)"


class OnchainWithdrawal(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="onchain_withdrawals"
    )
    address = models.CharField(max_length=90)
    amount_sat = models.BigIntegerField()
    fee_reserve_msat = models.BigIntegerField()
    status = models.CharField(
        max_length=16, choices=WithdrawalStatus.choices, default=WithdrawalStatus.QUEUED
    )
    # One batch at a time: a request in a batch is no longer queued, and only queued requests
    # are taken (SKIP LOCKED). A failed batch sends its requests back to the queue.
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.PROTECT, related_name="withdrawals"
    )
    fee_share_msat = models.BigIntegerField(
        null=True, blank=True, help_text="this request's exact share of the batch's fee"
    )
    fee_msat = models.BigIntegerField(
        null=True, blank=True, help_text="fee charged to the user: the share, up to the reserve"
    )
    attempts = models.PositiveIntegerField(default=0, help_text="batches refused by the node")
    failure_reason = models.CharField(max_length=300, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    batched_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="onchain_withdrawal_user"),
            models.Index(
                fields=["id"], name="onchain_withdrawal_queued", condition=Q(status="queued")
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount_sat__gt=0), name="onchain_withdrawal_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(fee_reserve_msat__gte=0), name="onchain_withdrawal_reserve_ok"
            ),
            models.CheckConstraint(
                condition=Q(fee_msat__isnull=True)
                | Q(fee_msat__gte=0, fee_msat__lte=models.F("fee_reserve_msat")),
                name="onchain_withdrawal_fee_within_reserve",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "failed", "canceled"], batch__isnull=True)
                | Q(status__in=["batched", "broadcast", "confirmed"], batch__isnull=False),
                name="onchain_withdrawal_batch_matches_status",
            ),
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="onchain_withdrawal_idempotency",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount_sat} sat to {self.address} ({self.status})"

    @property
    def amount_msat(self) -> int:
        return self.amount_sat * 1000


class OnchainControl(models.Model):
    """The one row of staff switches (pk=1). Paused: no new transaction leaves (no new batch,
    no re-send); confirmations and recovery lookups go on."""

    paused = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "on-chain batching control"

    def __str__(self) -> str:
        return "batching paused" if self.paused else "batching running"


class DepositAddress(models.Model):
    """An address handed to a user; the same one is handed out again until funds arrive."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposit_addresses"
    )
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="deposit_addresses")
    address = models.CharField(max_length=90, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["user", "node"], name="onchain_address_unused", condition=Q(used_at=None)
            ),
        ]

    def __str__(self) -> str:
        return self.address


class DepositStatus(models.TextChoices):
    PENDING = "pending", "Waiting for confirmations"
    CREDITED = "credited", "Credited"
    DROPPED = "dropped", "Dropped before confirmation"


class OnchainDeposit(models.Model):
    """One output paying a deposit address; credited once after enough confirmations."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    deposit_address = models.ForeignKey(
        DepositAddress, on_delete=models.PROTECT, related_name="deposits"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="onchain_deposits"
    )
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="onchain_deposits")
    txid = models.CharField(max_length=64)
    vout = models.PositiveIntegerField()
    amount_sat = models.BigIntegerField()
    confirmations = models.IntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=DepositStatus.choices, default=DepositStatus.PENDING
    )
    journal = models.OneToOneField(
        "ledger.Journal", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    first_seen_at = models.DateTimeField(auto_now_add=True)
    credited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-first_seen_at"], name="onchain_deposit_user"),
            models.Index(
                fields=["node"], name="onchain_deposit_pending", condition=Q(status="pending")
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["txid", "vout"], name="onchain_deposit_output_once"),
            models.CheckConstraint(
                condition=Q(amount_sat__gt=0), name="onchain_deposit_amount_positive"
            ),
            models.CheckConstraint(
                condition=~Q(status="credited") | Q(journal__isnull=False),
                name="onchain_deposit_credited_has_journal",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.txid}:{self.vout} ({self.status})"

    @property
    def amount_msat(self) -> int:
        return self.amount_sat * 1000
