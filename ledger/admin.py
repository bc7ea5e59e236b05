"""Staff admin for the ledger: everything read-only. Money moves only through services."""

from django.contrib import admin

from ledger import selectors
from ledger.models import Account, Journal, PendingTransfer, Posting


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("code", "kind", "owner", "balance", "allow_negative", "cached", "created_at")
    list_filter = ("kind", "cached", "allow_negative")
    search_fields = ("code", "name", "owner__username", "owner__email")
    list_select_related = ("owner",)

    @admin.display(description="balance (msat)")
    def balance(self, account: Account) -> int:
        # Cached accounts: the row. Hot accounts: checkpoint + postings since.
        return (
            account.balance_msat
            if account.cached
            else selectors.account_balance_msat(account=account)
        )


class PostingInline(admin.TabularInline):
    model = Posting
    fields = ("account", "amount_msat", "balance_after_msat")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Journal)
class JournalAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "kind",
        "idempotency_key",
        "memo",
        "reference_type",
        "reference_id",
    )
    list_filter = ("kind",)
    search_fields = ("idempotency_key", "memo", "reference_id")
    date_hierarchy = "created_at"
    inlines = [PostingInline]
    show_full_result_count = False  # no COUNT(*) over millions of journals per page


@admin.register(PendingTransfer)
class PendingTransferAdmin(ReadOnlyAdmin):
    list_display = (
        "key",
        "state",
        "amount_msat",
        "debit_account",
        "credit_account",
        "created_at",
        "resolved_at",
    )
    list_filter = ("state",)
    search_fields = ("key",)
    list_select_related = ("debit_account", "credit_account")
