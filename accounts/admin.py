from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin

from accounts.models import ApiKey, IdempotencyRecord, User, UserLimits
from accounts.selectors import withdrawal_allowance
from accounts.services import api_key_revoke


class UserLimitsInline(admin.StackedInline):
    model = UserLimits
    can_delete = True
    extra = 0
    max_num = 1


@admin.register(User)
class SatledgerUserAdmin(UserAdmin):
    list_display = ("username", "uuid", "email", "is_staff", "date_joined")
    readonly_fields = ("uuid", "withdrawals_today")
    search_fields = ("username", "email", "uuid")
    inlines = [UserLimitsInline]
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Withdrawal limits in use", {"fields": ("uuid", "withdrawals_today")}),
    )

    @admin.display(description="withdrawn in the last 24 hours")
    def withdrawals_today(self, user: User) -> str:
        """What support needs when a user asks why a withdrawal was refused: the same
        figures the money flows check (accounts.selectors.withdrawal_allowance)."""
        if user.pk is None:
            return "-"
        allowance = withdrawal_allowance(user=user)
        limits = allowance.limits
        return (
            f"{allowance.withdrawn_today_msat:,} msat of {limits.daily_withdrawal_msat:,} msat"
            f" a day (at most {limits.max_withdrawal_msat:,} msat at once)"
        )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued from the portal or `manage.py issue_api_key` (the plaintext is shown
    once there); here they can be inspected and revoked. The hash is never shown."""

    list_display = ("name", "user", "display_prefix", "scopes", "created_at", "last_used_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke_keys"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Revoke the selected API keys")
    def revoke_keys(self, request, queryset) -> None:
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
            count += 1
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = ("user", "max_withdrawal_msat", "daily_withdrawal_msat", "updated_at")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("user", "key", "method", "path", "state", "response_status", "created_at")
    list_filter = ("state",)
    search_fields = ("user__username", "key")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
