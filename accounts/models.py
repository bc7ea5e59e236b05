import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q


class User(AbstractUser):
    """A custodial user. `uuid` is the public identifier (invoice tags, API); the integer
    primary key never leaves the service."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    def __str__(self) -> str:
        return self.username


class ApiScope(models.TextChoices):
    READ = "read", "Read balance and transactions"
    RECEIVE = "receive", "Create deposit invoices"
    SEND = "send", "Withdraw and pay"


class ApiKey(models.Model):
    """An API key. The plaintext (`sl_<prefix>_<secret>`) is shown once when issued and never
    stored: only its SHA-256 is, and requests find their key by that hash. `prefix` stays
    readable so a person can tell keys apart."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="accounts_apikey_user")]

    def __str__(self) -> str:
        return f"{self.name} (sl_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def display_prefix(self) -> str:
        return f"sl_{self.prefix}_…"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class UserLimits(models.Model):
    """Per-user withdrawal limits; a null field falls back to the setting of the same name
    (WITHDRAWAL_MAX_MSAT, WITHDRAWAL_DAILY_MAX_MSAT). Read them with
    `accounts.selectors.limits_for`."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="limits"
    )
    max_withdrawal_msat = models.BigIntegerField(
        null=True, blank=True, help_text="largest single withdrawal; empty: the default"
    )
    daily_withdrawal_msat = models.BigIntegerField(
        null=True, blank=True, help_text="withdrawals per 24 hours; empty: the default"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "user limits"
        constraints = [
            models.CheckConstraint(
                condition=Q(max_withdrawal_msat__isnull=True) | Q(max_withdrawal_msat__gte=0),
                name="accounts_userlimits_max_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(daily_withdrawal_msat__isnull=True) | Q(daily_withdrawal_msat__gte=0),
                name="accounts_userlimits_daily_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"limits of {self.user}"


class IdempotencyState(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"


class IdempotencyRecord(models.Model):
    """One `Idempotency-Key` of one user: inserted (committed) before the operation runs, so
    the unique constraint lets exactly one request run it; completed with the response that
    every replay then gets."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_records"
    )
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=IdempotencyState.choices, default=IdempotencyState.IN_PROGRESS
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="accounts_idempotency_user_key"),
            models.CheckConstraint(
                condition=Q(state="in_progress") | Q(response_status__isnull=False),
                name="accounts_idempotency_completed_has_response",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key} ({self.state})"


class WithdrawalWindow(models.Model):
    """What a user has withdrawn in the last 24 hours (Lightning, internal and on-chain
    together), kept as a running total on one row per user, so that a withdrawal checks the
    daily limit and counts itself in one conditional write under that row's lock: two
    concurrent withdrawals can never both pass the limit, and the check costs the same on a
    user's ten-thousandth withdrawal of the day as on the first.

    `total_msat` is the sum of the user's WithdrawalMinute amounts from `counted_from` on;
    each withdrawal first drops the minutes that have left the window since (see
    accounts.services.withdrawal_window_count). `limit_msat` is the daily limit that was in
    force at the last withdrawal: the CHECK `within_limit` is what refuses one too many."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    counted_from = models.DateTimeField()
    total_msat = models.BigIntegerField()
    limit_msat = models.BigIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(total_msat__gte=0), name="accounts_withdrawalwindow_total_not_below_0"
            ),
            models.CheckConstraint(
                condition=Q(total_msat__lte=models.F("limit_msat")),
                name="accounts_withdrawalwindow_within_limit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.total_msat} msat since {self.counted_from}"


class WithdrawalMinute(models.Model):
    """The amount a user's withdrawals of one minute count against the daily limit (less
    what failed and came back). A minute leaves the window 24 hours after its end."""

    # No index of its own: the unique (user, minute) index starts with it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    minute = models.DateTimeField()
    amount_msat = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "minute"], name="accounts_withdrawalminute_user_minute"
            ),
            models.CheckConstraint(
                condition=Q(amount_msat__gte=0), name="accounts_withdrawalminute_not_below_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} at {self.minute}: {self.amount_msat} msat"
