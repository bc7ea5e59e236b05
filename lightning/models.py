"""Nodes and the Lightning money objects: deposit invoices and outgoing payments.

Money itself lives in the ledger; these rows record what the nodes were asked and answered,
and link each to the journals it caused (`deposit:<payment_hash>`, `withdrawal:<id>:...`)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from lightning.connection import parse_connection_string


class NodeKind(models.TextChoices):
    FAKE = "fake", "Simulated node"
    LND = "lnd", "LND (gRPC)"
    CLN = "cln", "Core Lightning (JSON-RPC)"
    ECLAIR = "eclair", "Eclair (REST)"


class Node(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=NodeKind.choices)
    # BTCPay-style connection string. Secrets belong in files or env (`...filepath=`,
    # `env:NAME`); whatever is here is shown only redacted.
    connection = models.TextField()
    enabled = models.BooleanField(default=True)
    can_receive = models.BooleanField(default=True)
    can_send = models.BooleanField(default=True)
    can_onchain = models.BooleanField(default=True)
    priority = models.IntegerField(default=100, help_text="lower is tried first")
    max_receive_msat = models.BigIntegerField(null=True, blank=True)
    max_send_msat = models.BigIntegerField(null=True, blank=True)
    # Last health check (updated by `nodes check` and the snapshot job).
    healthy = models.BooleanField(default=False)
    health_error = models.CharField(max_length=300, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    alias = models.CharField(max_length=100, blank=True)
    pubkey = models.CharField(max_length=66, blank=True)
    block_height = models.IntegerField(null=True, blank=True)
    synced = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def connection_redacted(self) -> str:
        return parse_connection_string(self.connection).redacted()

    @property
    def roles(self) -> list[str]:
        flags = (
            ("receive", self.can_receive),
            ("send", self.can_send),
            ("onchain", self.can_onchain),
        )
        return [role for role, on in flags if on]


class NodeSnapshot(models.Model):
    """Health and liquidity at one moment (the snapshot job; shown in the admin)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField(auto_now_add=True, db_index=True)
    healthy = models.BooleanField()
    error = models.CharField(max_length=300, blank=True)
    block_height = models.IntegerField(null=True, blank=True)
    synced = models.BooleanField(default=False)
    channel_local_msat = models.BigIntegerField(null=True, blank=True)
    channel_remote_msat = models.BigIntegerField(null=True, blank=True)
    onchain_confirmed_sat = models.BigIntegerField(null=True, blank=True)
    onchain_unconfirmed_sat = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"{self.node_id} at {self.taken_at:%Y-%m-%d %H:%M}"


class InvoiceStreamCursor(models.Model):
    """Where each node's settled-invoice listener resumes (LND settle_index, CLN pay_index...)."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="stream_cursor")
    cursor = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.node_id}: {self.cursor}"


class InvoiceStatus(models.TextChoices):
    OPEN = "open", "Open"
    SETTLED = "settled", "Settled"
    EXPIRED = "expired", "Expired"
    CANCELED = "canceled", "Canceled"


class Invoice(models.Model):
    """A deposit invoice we issued. `payment_hash` is unique across the whole service: a
    settlement is matched by hash, never by parsing a memo."""

    # Unique by the constraints below rather than `unique=True`, whose extra LIKE index on
    # PostgreSQL nothing reads; `user` is indexed by lightning_invoice_user. Every index here is
    # written again when an invoice settles (the update changes indexed columns).
    payment_hash = models.CharField(max_length=64)
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="invoices")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="invoices",
        db_index=False,
    )
    bolt11 = models.TextField()
    label = models.CharField(max_length=100)
    memo = models.CharField(max_length=640, blank=True)
    amount_msat = models.BigIntegerField(null=True, blank=True)  # None: amountless
    status = models.CharField(
        max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.OPEN
    )
    amount_received_msat = models.BigIntegerField(default=0)
    preimage = models.CharField(max_length=64, blank=True)
    # Settled by an internal payment from another user rather than over Lightning.
    settled_internally = models.BooleanField(default=False)
    journal = models.OneToOneField(
        "ledger.Journal", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="lightning_invoice_user"),
            models.Index(
                fields=["expires_at"], name="lightning_invoice_open", condition=Q(status="open")
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["payment_hash"], name="lightning_invoice_payment_hash_unique"
            ),
            models.UniqueConstraint(fields=["label"], name="lightning_invoice_label_unique"),
            models.CheckConstraint(
                condition=Q(amount_msat__isnull=True) | Q(amount_msat__gt=0),
                name="lightning_invoice_amount_positive",
            ),
            models.CheckConstraint(
                condition=~Q(status="settled")
                | Q(journal__isnull=False, amount_received_msat__gt=0),
                name="lightning_invoice_settled_has_journal",
            ),
        ]

    def __str__(self) -> str:
        return self.payment_hash


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


# A payment in these states sent or may have sent money.
LIVE_PAYMENT_STATUSES = (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED)


class Payment(models.Model):
    """An outgoing Lightning payment (a withdrawal to a BOLT 11 invoice), or an internal
    payment of another user's deposit invoice (`internal=True`, no node).

    The funds are reserved by a two-phase ledger transfer keyed `withdrawal:<id>`; a payment
    is sent to a node at most once (`sent_at` is set before the call, in its own commit), and
    an unknown outcome stays PENDING until the tracker learns the final state."""

    # Indexed by lightning_payment_user and lightning_payment_hash below: the defaults would add
    # a second index on user and a LIKE index on the hash, written on every payment for nothing.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="payments",
        db_index=False,
    )
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    payment_hash = models.CharField(max_length=64)
    bolt11 = models.TextField()
    amount_msat = models.BigIntegerField()
    fee_reserve_msat = models.BigIntegerField(default=0)
    fee_msat = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    internal = models.BooleanField(default=False)
    preimage = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=300, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Not auto_now_add, which always overwrites: an internal payment is created and resolved
    # at one instant and says so (it used to show a resolved_at microseconds before created_at).
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="lightning_payment_user"),
            models.Index(fields=["payment_hash"], name="lightning_payment_hash"),
            models.Index(
                fields=["status"], name="lightning_payment_pending", condition=Q(status="pending")
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount_msat__gt=0), name="lightning_payment_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(fee_reserve_msat__gte=0), name="lightning_payment_reserve_ok"
            ),
            # A payment hash is paid successfully at most once across the whole service.
            models.UniqueConstraint(
                fields=["payment_hash"],
                condition=Q(status="succeeded") | Q(status="pending"),
                name="lightning_payment_hash_live_once",
            ),
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="lightning_payment_idempotency",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payment_hash} ({self.status})"
