"""Staff admin for on-chain money: batches (outputs, fee, confirmations), withdrawals,
deposit addresses and deposits are read-only; the buttons and actions call services only
(pause/resume, run a round now, cancel a queued withdrawal with a refund)."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html_join

from ledger.admin import ReadOnlyAdmin
from lightning.errors import FlowError
from onchain import services
from onchain.models import Batch, DepositAddress, OnchainDeposit, OnchainWithdrawal

CONTROL_PERMISSION = "onchain.change_onchaincontrol"


class WithdrawalInline(admin.TabularInline):
    model = OnchainWithdrawal
    fields = (
        "id",
        "user",
        "address",
        "amount_sat",
        "fee_share_msat",
        "fee_msat",
        "fee_reserve_msat",
        "status",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "node",
        "status",
        "output_count",
        "total_sat",
        "fee_sat",
        "confirmations",
        "txid",
        "missing_since",
        "created_at",
        "broadcast_at",
    )
    list_filter = ("status", "node")
    search_fields = ("txid", "label")
    list_select_related = ("node",)
    readonly_fields = (
        "node",
        "label",
        "status",
        "txid",
        "fee_sat",
        "confirmations",
        "block_height",
        "output_count",
        "total_sat",
        "outputs_table",
        "send_attempts",
        "sent_at",
        "error",
        "missing_since",
        "created_at",
        "broadcast_at",
        "confirmed_at",
        "failed_at",
    )
    exclude = ("outputs",)
    inlines = [WithdrawalInline]
    change_list_template = "admin/onchain/batch/change_list.html"

    @admin.display(description="outputs sent (address, sat, withdrawal id)")
    def outputs_table(self, batch: Batch) -> str:
        return format_html_join("", "<div>{} {} sat (#{})</div>", batch.outputs)

    def get_urls(self):
        extra = [
            path("run-now/", self.admin_site.admin_view(self.run_now), name="onchain_run_now"),
            path("pause/", self.admin_site.admin_view(self.pause), name="onchain_pause"),
            path("resume/", self.admin_site.admin_view(self.resume), name="onchain_resume"),
        ]
        return extra + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context=None):
        control = services.control_get()
        context = {"onchain_control": control, **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def _refused(self, request: HttpRequest) -> HttpResponseNotAllowed | None:
        if not request.user.has_perm(CONTROL_PERMISSION):
            raise PermissionDenied
        return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])

    def _back(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:onchain_batch_changelist"))

    def run_now(self, request: HttpRequest):
        if refused := self._refused(request):
            return refused
        # Staff asked explicitly: send what is queued, ignoring thresholds and the pause.
        report = services.batch_round(force=True)
        for line in report.lines or ["nothing to do"]:
            self.message_user(request, line, messages.INFO)
        return self._back()

    def pause(self, request: HttpRequest):
        if refused := self._refused(request):
            return refused
        services.batching_set_paused(
            paused=True, by=request.user, reason=request.POST.get("reason", "")
        )
        self.message_user(request, "Batching paused: no new transaction will be sent.")
        return self._back()

    def resume(self, request: HttpRequest):
        if refused := self._refused(request):
            return refused
        services.batching_set_paused(paused=False, by=request.user)
        self.message_user(request, "Batching resumed.")
        return self._back()


@admin.register(OnchainWithdrawal)
class OnchainWithdrawalAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "address",
        "amount_sat",
        "status",
        "batch",
        "fee_msat",
        "attempts",
        "created_at",
    )
    list_filter = ("status",)
    search_fields = ("address", "user__username", "public_id")
    list_select_related = ("user", "batch")
    show_full_result_count = False
    actions = ["cancel_withdrawals"]

    @admin.action(description="Cancel selected queued withdrawals (refund)")
    def cancel_withdrawals(self, request: HttpRequest, queryset) -> None:
        if not request.user.has_perm(CONTROL_PERMISSION):
            raise PermissionDenied
        for withdrawal in queryset:
            try:
                services.withdrawal_cancel(
                    withdrawal_id=withdrawal.pk, by=request.user, reason="canceled by staff"
                )
            except FlowError as error:
                self.message_user(request, f"#{withdrawal.pk}: {error.message}", messages.WARNING)
            else:
                self.message_user(request, f"#{withdrawal.pk}: canceled and refunded")


@admin.register(DepositAddress)
class DepositAddressAdmin(ReadOnlyAdmin):
    list_display = ("address", "user", "node", "created_at", "used_at")
    search_fields = ("address", "user__username")
    list_select_related = ("user", "node")


@admin.register(OnchainDeposit)
class OnchainDepositAdmin(ReadOnlyAdmin):
    list_display = ("txid", "vout", "user", "amount_sat", "confirmations", "status", "credited_at")
    list_filter = ("status", "node")
    search_fields = ("txid", "user__username")
    list_select_related = ("user",)
