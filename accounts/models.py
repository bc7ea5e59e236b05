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
