"""State of the simulated Lightning node(s) and of the "outside world" around them.

Everything lives in the database so the web, worker and listener processes all see one node.
Several fake nodes (keyed by node name) can share a database; an invoice one of them issued
and another pays is routed between them. The outside world is one chain (a block height), one
outside wallet, and outside payees whose invoices (and preimages) it knows.

None of this is money of the service: the fake node is the node, never the ledger.
"""

from django.db import models
from django.db.models import Q

DEFAULT_FEE_BASE_MSAT = 500
DEFAULT_FEE_PPM = 1_000
DEFAULT_LOCAL_MSAT = 1_000_000_000_000  # 10 BTC of outbound liquidity
DEFAULT_REMOTE_MSAT = 1_000_000_000_000  # 10 BTC of inbound liquidity
DEFAULT_ONCHAIN_SAT = 100_000_000  # 1 BTC in the node's on-chain wallet
GENESIS_HEIGHT = 100


class FakeWorld(models.Model):
    """The one outside world (a single row, pk=1): the chain and the outside payees' key."""

    block_height = models.IntegerField(default=GENESIS_HEIGHT)
    # Key the outside payees sign their invoices with (hex). Test data, not a secret.
    private_key = models.CharField(max_length=64)
    pubkey = models.CharField(max_length=66)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="fakenode_world_singleton"),
            models.CheckConstraint(
                condition=Q(block_height__gte=0), name="fakenode_world_height_ok"
            ),
        ]

    def __str__(self) -> str:
        return f"chain at {self.block_height}"


class FakeNode(models.Model):
    """One simulated node, created on first use of its name.

    Routing fee policy: the network charges the paying node `fee_base_msat + amount *
    fee_ppm / 1e6` (rounded down) for every payment it sends, to an outside payee or to
    another fake node alike. Liquidity: a payment moves amount + fee from `local_msat` to
    `remote_msat` (taken from local when it starts, so in-flight HTLCs hold it); a received
    payment moves its amount from `remote_msat` to `local_msat`.

    `last_settle_index` is the counter settlements are numbered from: a settlement locks this
    row, takes the next number and commits both together, so indexes are unique, gap-free
    and become visible in order (see services.invoice_settle)."""

    name = models.CharField(max_length=64, unique=True)
    alias = models.CharField(max_length=100)
    private_key = models.CharField(max_length=64)  # hex; the node identity
    pubkey = models.CharField(max_length=66, unique=True)
    down = models.BooleanField(default=False, help_text="every call raises NodeUnreachable")
    fee_base_msat = models.BigIntegerField(default=DEFAULT_FEE_BASE_MSAT)
    fee_ppm = models.BigIntegerField(default=DEFAULT_FEE_PPM)
    local_msat = models.BigIntegerField(default=DEFAULT_LOCAL_MSAT)
    remote_msat = models.BigIntegerField(default=DEFAULT_REMOTE_MSAT)
    onchain_initial_sat = models.BigIntegerField(default=DEFAULT_ONCHAIN_SAT)
    # Behaviour toggles for the payments this node sends (each consumes one).
    fail_next = models.PositiveIntegerField(default=0)
    fail_reason = models.CharField(max_length=100, default="no_route")
    hang_next = models.PositiveIntegerField(default=0)
    last_settle_index = models.BigIntegerField(default=0)
    next_address_index = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(local_msat__gte=0, remote_msat__gte=0),
                name="fakenode_node_liquidity_ok",
            ),
            models.CheckConstraint(
                condition=Q(fee_base_msat__gte=0, fee_ppm__gte=0), name="fakenode_node_fees_ok"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def routing_fee_msat(self, amount_msat: int) -> int:
        return self.fee_base_msat + amount_msat * self.fee_ppm // 1_000_000


class FakeInvoiceState(models.TextChoices):
    OPEN = "open", "Open"
    SETTLED = "settled", "Settled"
    CANCELED = "canceled", "Canceled"


class FakeInvoice(models.Model):
    """An invoice a fake node issued (expired open invoices read as canceled)."""

    node = models.ForeignKey(FakeNode, on_delete=models.CASCADE, related_name="invoices")
    payment_hash = models.CharField(max_length=64, unique=True)
    preimage = models.CharField(max_length=64)
    payment_secret = models.CharField(max_length=64)
    bolt11 = models.TextField()
    label = models.CharField(max_length=200, blank=True)
    memo = models.CharField(max_length=640, blank=True)
    description_hash = models.CharField(max_length=64, blank=True)
    amount_msat = models.BigIntegerField(null=True, blank=True)
    amount_received_msat = models.BigIntegerField(default=0)
    state = models.CharField(
        max_length=16, choices=FakeInvoiceState.choices, default=FakeInvoiceState.OPEN
    )
    settle_index = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["node", "settle_index"], name="fakenode_invoice_settle_index_once"
            ),
            models.UniqueConstraint(
                fields=["node", "label"],
                condition=~Q(label=""),
                name="fakenode_invoice_label_once",
            ),
            models.CheckConstraint(
                condition=Q(amount_msat__isnull=True) | Q(amount_msat__gt=0),
                name="fakenode_invoice_amount_ok",
            ),
            models.CheckConstraint(
                condition=(
                    Q(state="settled", settle_index__isnull=False, amount_received_msat__gt=0)
                    | (~Q(state="settled") & Q(settle_index__isnull=True))
                ),
                name="fakenode_invoice_settled_has_index",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id}:{self.payment_hash} ({self.state})"


class FakePaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class FakePayment(models.Model):
    """A payment a fake node sent (one row per node and hash; a failed one may be retried)."""

    node = models.ForeignKey(FakeNode, on_delete=models.CASCADE, related_name="payments")
    payment_hash = models.CharField(max_length=64)
    payee = models.CharField(max_length=66)  # the invoice's payee pubkey (hex)
    bolt11 = models.TextField()
    amount_msat = models.BigIntegerField()
    fee_msat = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=FakePaymentStatus.choices)
    preimage = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=100, blank=True)
    hung = models.BooleanField(default=False, help_text="pending until resolved by the world")
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["node", "payment_hash"], name="fakenode_payment_once_per_node"
            ),
            models.CheckConstraint(condition=Q(amount_msat__gt=0), name="fakenode_payment_ok"),
        ]
        indexes = [
            models.Index(fields=["status"], name="fakenode_payment_hung", condition=Q(hung=True)),
        ]

    def __str__(self) -> str:
        return f"{self.node_id}:{self.payment_hash} ({self.status})"


class OutsideInvoice(models.Model):
    """An invoice of an outside payee (`fakenode invoice`): the world knows its preimage, so a
    fake node paying it gets a correct one back."""

    payment_hash = models.CharField(max_length=64, unique=True)
    preimage = models.CharField(max_length=64)
    payment_secret = models.CharField(max_length=64)
    bolt11 = models.TextField()
    memo = models.CharField(max_length=640, blank=True)
    amount_msat = models.BigIntegerField(null=True, blank=True)
    amount_received_msat = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    paid_by = models.ForeignKey(
        FakeNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return self.payment_hash


class FakeAddress(models.Model):
    """An on-chain address a fake node handed out (P2WPKH, bech32 for the network)."""

    node = models.ForeignKey(FakeNode, on_delete=models.CASCADE, related_name="addresses")
    address = models.CharField(max_length=100, unique=True)
    index = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "index"], name="fakenode_address_index"),
        ]

    def __str__(self) -> str:
        return self.address


class FakeTransaction(models.Model):
    """An on-chain transaction: sent by a fake node's wallet (`node`) or by the outside wallet
    (`node` empty). Unconfirmed while `block_height` is empty."""

    txid = models.CharField(max_length=64, unique=True)
    node = models.ForeignKey(
        FakeNode, null=True, blank=True, on_delete=models.CASCADE, related_name="sent_transactions"
    )
    label = models.CharField(max_length=200, blank=True)
    fee_sat = models.BigIntegerField(null=True, blank=True)
    block_height = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["node", "label"], name="fakenode_tx_label"),
            models.Index(
                fields=["created_at"],
                name="fakenode_tx_unconfirmed",
                condition=Q(block_height__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.txid


class FakeTxOutput(models.Model):
    transaction = models.ForeignKey(
        FakeTransaction, on_delete=models.CASCADE, related_name="outputs"
    )
    vout = models.IntegerField()
    address = models.CharField(max_length=100, db_index=True)
    amount_sat = models.BigIntegerField()

    class Meta:
        ordering = ["transaction_id", "vout"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "vout"], name="fakenode_output_once"),
            models.CheckConstraint(condition=Q(amount_sat__gt=0), name="fakenode_output_ok"),
        ]

    def __str__(self) -> str:
        return f"{self.transaction_id}:{self.vout}"
