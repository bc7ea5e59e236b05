"""Nodes: building backends, choosing a node for a job, health checks.

A backend instance is cached per thread and per node connection string (backends are used
from one thread at a time); changing a node's connection string builds a new one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from config.sqlrows import ModelSql
from lightning.backends.base import (
    LightningBackend,
    LightningError,
    Network,
    NodeAuthFailed,
)
from lightning.connection import build_backend, parse_connection_string
from lightning.models import Node, NodeSnapshot

logger = logging.getLogger(__name__)
_local = threading.local()


class NoNodeAvailable(LightningError):
    """No enabled, healthy node can do this now (503 for the API)."""

    code = "node_unavailable"


def configured_network() -> Network:
    return Network(settings.LIGHTNING_NETWORK)


def node_backend(node: Node) -> LightningBackend:
    cache: dict[tuple[int, str], LightningBackend] = getattr(_local, "backends", None) or {}
    _local.backends = cache
    key = (node.pk, node.connection)
    backend = cache.get(key)
    if backend is None:
        for stale in [k for k in cache if k[0] == node.pk]:
            cache.pop(stale).close()
        backend = build_backend(
            node.connection,
            node_name=node.name,
            network=configured_network(),
            timeout_s=settings.LIGHTNING_CALL_TIMEOUT_S,
        )
        cache[key] = backend
    return backend


def forget_backends() -> None:
    """Close this thread's cached backends (tests, after a node's settings change)."""
    for backend in (getattr(_local, "backends", None) or {}).values():
        backend.close()
    _local.backends = {}


# --- selection ---------------------------------------------------------------------------


_NODE_SQL = ModelSql(Node, "n")


def receiving_nodes(*, amount_msat: int | None) -> list[Node]:
    """Enabled receive nodes able to take `amount_msat`, healthy ones first, then by
    priority. Unhealthy ones stay in the list as a last resort: the health flag may be stale."""
    # Hand-written (config.sqlrows): on every deposit's path.
    if amount_msat is None:
        return _healthy_first(_NODE_SQL.where("n.enabled AND n.can_receive"))
    return _healthy_first(
        _NODE_SQL.where(
            "n.enabled AND n.can_receive"
            " AND (n.max_receive_msat IS NULL OR n.max_receive_msat >= %s)",
            [amount_msat],
        )
    )


def sending_nodes(*, amount_msat: int) -> list[Node]:
    """Enabled send nodes that may have the outbound liquidity for `amount_msat`, by the last
    snapshot (a node never snapshotted is tried too), healthy first."""
    nodes = Node.objects.filter(enabled=True, can_send=True).filter(
        Q(max_send_msat__isnull=True) | Q(max_send_msat__gte=amount_msat)
    )
    usable = []
    for node in _healthy_first(nodes):
        snapshot = node.snapshots.filter(healthy=True).only("channel_local_msat").first()
        if (
            snapshot
            and snapshot.channel_local_msat is not None
            and snapshot.channel_local_msat < amount_msat
        ):
            continue
        usable.append(node)
    return usable


def onchain_nodes() -> list[Node]:
    return _healthy_first(Node.objects.filter(enabled=True, can_onchain=True))


def _healthy_first(nodes: Iterable[Node]) -> list[Node]:
    return sorted(nodes, key=lambda node: (not node.healthy, node.priority, node.name))


def mark_unreachable(node: Node, error: LightningError) -> None:
    Node.objects.filter(pk=node.pk).update(
        healthy=False, health_error=error.message[:300], health_checked_at=timezone.now()
    )
    node.healthy = False


# --- health ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthReport:
    node: str
    reachable: bool
    authenticated: bool
    network_ok: bool
    synced: bool
    block_height: int | None
    error: str

    @property
    def healthy(self) -> bool:
        return self.reachable and self.authenticated and self.network_ok and self.synced


def node_check(*, node: Node, snapshot: bool = False) -> HealthReport:
    """Reachability, credentials, network matches LIGHTNING_NETWORK, synced to chain. Records
    the result on the node (and a liquidity snapshot when asked)."""
    backend = None
    reachable = authenticated = network_ok = synced = False
    block_height = None
    error = ""
    balances = None
    try:
        backend = node_backend(node)
        info = backend.get_info()
        reachable = authenticated = True
        block_height = info.block_height
        synced = info.synced_to_chain
        network_ok = info.network == configured_network()
        if not network_ok:
            error = f"node is on {info.network}, the service on {configured_network()}"
        elif not synced:
            error = "node is not synced to the chain"
        node.alias, node.pubkey = info.alias[:100], info.pubkey
        if snapshot:
            balances = backend.get_balances()
    except NodeAuthFailed as failure:
        reachable, error = True, failure.message
    except LightningError as failure:
        error = failure.message
    except Exception as failure:  # a misconfigured connection string, a missing file
        logger.warning("node %s check failed: %s", node.name, type(failure).__name__)
        error = f"{type(failure).__name__}: {failure}"[:300]
    report = HealthReport(
        node=node.name,
        reachable=reachable,
        authenticated=authenticated,
        network_ok=network_ok,
        synced=synced,
        block_height=block_height,
        error=error[:300],
    )
    node.healthy = report.healthy
    node.health_error = report.error
    node.health_checked_at = timezone.now()
    node.block_height = block_height
    node.synced = synced
    node.save(
        update_fields=[
            "healthy",
            "health_error",
            "health_checked_at",
            "block_height",
            "synced",
            "alias",
            "pubkey",
        ]
    )
    if snapshot:
        NodeSnapshot.objects.create(
            node=node,
            healthy=report.healthy,
            error=report.error,
            block_height=block_height,
            synced=synced,
            channel_local_msat=balances.channel_local_msat if balances else None,
            channel_remote_msat=balances.channel_remote_msat if balances else None,
            onchain_confirmed_sat=balances.onchain_confirmed_sat if balances else None,
            onchain_unconfirmed_sat=balances.onchain_unconfirmed_sat if balances else None,
        )
    return report


# --- registry ----------------------------------------------------------------------------


def node_add(
    *, name: str, connection: str, roles: Iterable[str] | None = None, priority: int = 100
) -> Node:
    parsed = parse_connection_string(connection)
    role_set = set(roles) if roles is not None else {"receive", "send", "onchain"}
    unknown = role_set - {"receive", "send", "onchain"}
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")
    return Node.objects.create(
        name=name,
        kind=parsed.kind,
        connection=connection,
        can_receive="receive" in role_set,
        can_send="send" in role_set,
        can_onchain="onchain" in role_set,
        priority=priority,
    )


def node_set_enabled(*, name: str, enabled: bool) -> Node:
    node = Node.objects.get(name=name)
    node.enabled = enabled
    node.save(update_fields=["enabled"])
    return node


def ensure_default_node() -> Node | None:
    """Register LIGHTNING_DEFAULT_NODE as "default" when no node exists (embedded setup)."""
    if Node.objects.exists() or not settings.LIGHTNING_DEFAULT_NODE:
        return None
    return node_add(name="default", connection=settings.LIGHTNING_DEFAULT_NODE)
