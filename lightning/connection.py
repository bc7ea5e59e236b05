"""BTCPay-style connection strings: `type=lnd-grpc;server=https://host:10009;
macaroonfilepath=/path/admin.macaroon;certfilepath=/path/tls.cert`.

Secrets are given by file path (`macaroonfilepath`, `certfilepath`, `passwordfilepath`,
`runefilepath`) or as `env:NAME` values, and are never printed: `redacted()` is what logs,
errors, `nodes list` and the admin show."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from django.utils.module_loading import import_string

from lightning.backends.base import LightningBackend, Network

# connection-string `type=` value -> backend kind
KIND_BY_TYPE = {
    "fake": "fake",
    "lnd-grpc": "lnd",
    "lnd": "lnd",
    "clightning": "cln",
    "cln": "cln",
    "eclair": "eclair",
}
BACKEND_CLASS_PATHS = {
    "fake": "lightning.backends.fake.FakeBackend",
    "lnd": "lightning.backends.lnd.LndBackend",
    "cln": "lightning.backends.cln.ClnBackend",
    "eclair": "lightning.backends.eclair.EclairBackend",
}
SECRET_KEYS = frozenset({"macaroon", "password", "rune", "apikey", "api-token", "secret"})


class InvalidConnectionString(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ConnectionString:
    kind: str
    params: Mapping[str, str]

    def redacted(self) -> str:
        parts = [f"type={self.params.get('type', self.kind)}"]
        for key, value in self.params.items():
            if key == "type":
                continue
            parts.append(f"{key}={'***' if key in SECRET_KEYS else value}")
        return ";".join(parts)


def parse_connection_string(value: str) -> ConnectionString:
    params: dict[str, str] = {}
    for part in value.strip().split(";"):
        if not part.strip():
            continue
        key, sep, item = part.partition("=")
        if not sep:
            raise InvalidConnectionString(f"expected key=value, got {key.strip()!r}")
        params[key.strip().lower()] = item.strip()
    node_type = params.get("type", "").lower()
    if node_type not in KIND_BY_TYPE:
        raise InvalidConnectionString(
            f"unknown node type {node_type!r}; expected one of {', '.join(sorted(KIND_BY_TYPE))}"
        )
    return ConnectionString(kind=KIND_BY_TYPE[node_type], params=params)


def resolve_secret(value: str) -> str:
    """`env:NAME` reads the environment; anything else is the value itself."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise InvalidConnectionString(f"environment variable {name} is not set")
        return os.environ[name]
    return value


def backend_class(kind: str) -> type[LightningBackend]:
    try:
        return import_string(BACKEND_CLASS_PATHS[kind])
    except KeyError:
        raise InvalidConnectionString(f"unknown backend kind {kind!r}") from None


def build_backend(
    connection: str | ConnectionString, *, node_name: str, network: Network, timeout_s: float
) -> LightningBackend:
    parsed = parse_connection_string(connection) if isinstance(connection, str) else connection
    return backend_class(parsed.kind).from_connection(
        parsed.params, node_name=node_name, network=network, timeout_s=timeout_s
    )
