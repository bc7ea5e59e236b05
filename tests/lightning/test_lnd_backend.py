"""LndBackend against an in-process gRPC server built from LND's own .proto files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from lightning.backends.base import (
    InvoiceState,
    LightningError,
    Network,
    NodeAuthFailed,
    NodeRejected,
    NodeUnreachable,
    OutcomeUnknown,
    PaymentStatus,
)
from lightning.backends.lnd import LndBackend
from lightning.connection import InvalidConnectionString, build_backend, parse_connection_string
from tests.fakes.lnd_server import FakeLndServer, make_tls_cert, sign_invoice
from tests.lightning.contract import BackendContract, next_settlement

TIMEOUT_S = 3.0


def connect(
    server: FakeLndServer,
    tmp_path: Path,
    *,
    macaroon_hex: str | None = None,
    cert_pem: bytes | None = None,
    timeout_s: float = TIMEOUT_S,
) -> LndBackend:
    cert = tmp_path / f"tls-{os.urandom(4).hex()}.cert"
    cert.write_bytes(cert_pem or server.cert_pem)
    macaroon = tmp_path / f"admin-{os.urandom(4).hex()}.macaroon"
    macaroon.write_bytes(bytes.fromhex(macaroon_hex or server.macaroon_hex))
    backend = build_backend(
        server.connection_string(cert_path=str(cert), macaroon_path=str(macaroon)),
        node_name="lnd-test",
        network=Network(server.node.network),
        timeout_s=timeout_s,
    )
    assert isinstance(backend, LndBackend)
    return backend


@pytest.fixture
def lnd_server():
    server = FakeLndServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def backend(lnd_server, tmp_path):
    backend = connect(lnd_server, tmp_path)
    yield backend
    backend.close()


@pytest.fixture
def world(lnd_server):
    return lnd_server


BAD_MACAROON = os.urandom(32).hex()


@pytest.fixture
def bad_auth_backend(lnd_server, tmp_path):
    backend = connect(lnd_server, tmp_path, macaroon_hex=BAD_MACAROON)
    yield backend
    backend.close()


@pytest.fixture
def secrets(lnd_server):
    return [lnd_server.macaroon_hex, BAD_MACAROON]


class TestLndBackend(BackendContract):
    pass
