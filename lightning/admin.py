"""Staff admin for nodes (health, liquidity, enable/disable) and the Lightning money objects
(read-only: money changes only through services)."""

from django.contrib import admin, messages

from ledger.admin import ReadOnlyAdmin
from lightning.models import Invoice, Node, NodeSnapshot, Payment
from lightning.nodes import node_check


class SnapshotInline(admin.TabularInline):
    model = NodeSnapshot
    fields = (
        "taken_at",
        "healthy",
        "block_height",
        "channel_local_msat",
        "channel_remote_msat",
        "onchain_confirmed_sat",
        "onchain_unconfirmed_sat",
        "error",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-taken_at",)


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "enabled",
        "healthy",
        "block_height",
        "outbound_msat",
        "inbound_msat",
        "health_checked_at",
        "priority",
    )
    list_filter = ("kind", "enabled", "healthy")
    # The connection string may carry a secret: only its redacted form is shown.
    fields = (
        "name",
        "kind",
        "connection_redacted",
        "enabled",
        "can_receive",
        "can_send",
        "can_onchain",
        "priority",
        "max_receive_msat",
        "max_send_msat",
        "healthy",
        "health_error",
        "health_checked_at",
        "alias",
        "pubkey",
        "block_height",
        "synced",
    )
    readonly_fields = (
        "name",
        "kind",
        "connection_redacted",
        "healthy",
        "health_error",
        "health_checked_at",
        "alias",
        "pubkey",
        "block_height",
        "synced",
    )
    inlines = [SnapshotInline]
    actions = ["enable_nodes", "disable_nodes", "check_nodes"]

    def has_add_permission(self, request) -> bool:
        return False  # `manage.py nodes add` validates and checks the connection

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # invoices and payments refer to nodes; disable instead

    def _last_snapshot(self, node: Node) -> NodeSnapshot | None:
        return node.snapshots.filter(healthy=True).first()

    @admin.display(description="outbound (msat)")
    def outbound_msat(self, node: Node) -> int | None:
        snapshot = self._last_snapshot(node)
        return snapshot.channel_local_msat if snapshot else None

    @admin.display(description="inbound (msat)")
    def inbound_msat(self, node: Node) -> int | None:
        snapshot = self._last_snapshot(node)
        return snapshot.channel_remote_msat if snapshot else None

    @admin.display(description="connection")
    def connection_redacted(self, node: Node) -> str:
        return node.connection_redacted

    @admin.action(description="Enable selected nodes")
    def enable_nodes(self, request, queryset) -> None:
        queryset.update(enabled=True)

    @admin.action(description="Disable selected nodes")
    def disable_nodes(self, request, queryset) -> None:
        queryset.update(enabled=False)

    @admin.action(description="Check health and snapshot liquidity now")
    def check_nodes(self, request, queryset) -> None:
        for node in queryset:
            report = node_check(node=node, snapshot=True)
            level = messages.SUCCESS if report.healthy else messages.WARNING
            self.message_user(
                request, f"{node.name}: {'healthy' if report.healthy else report.error}", level
            )


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = (
        "payment_hash",
        "user",
        "node",
        "status",
        "amount_msat",
        "amount_received_msat",
        "created_at",
    )
    list_filter = ("status", "node", "settled_internally")
    search_fields = ("payment_hash", "user__username", "label")
    list_select_related = ("user", "node")
    show_full_result_count = False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "node",
        "status",
        "amount_msat",
        "fee_msat",
        "internal",
        "created_at",
    )
    list_filter = ("status", "internal", "node")
    search_fields = ("payment_hash", "user__username")
    list_select_related = ("user", "node")
    show_full_result_count = False
