"""Fixtures for the money flows: fake nodes registered as Node rows, driven through the
`fakenode` command exactly as an operator would."""

from io import StringIO

import pytest
from django.core.management import call_command

from lightning.nodes import forget_backends, node_add


def fakenode(*args: str) -> str:
    out = StringIO()
    call_command("fakenode", *args, stdout=out)
    return out.getvalue()


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip()


@pytest.fixture(autouse=True)
def _fresh_backends():
    forget_backends()
    yield
    forget_backends()


@pytest.fixture
def alpha(db):
    node = node_add(name="alpha", connection="type=fake", priority=10)
    node.healthy = True
    node.save(update_fields=["healthy"])
    return node


@pytest.fixture
def beta(db):
    node = node_add(name="beta", connection="type=fake", priority=20)
    node.healthy = True
    node.save(update_fields=["healthy"])
    return node


class OutsideWorld:
    """The world beyond our nodes, as the `fakenode` command simulates it."""

    def __init__(self, node_name: str) -> None:
        self.node = node_name

    def invoice(self, amount_msat: int | None = None, memo: str = "outside") -> str:
        args = ["invoice", "--memo", memo]
        if amount_msat is not None:
            args += ["--amount-msat", str(amount_msat)]
        return last_line(fakenode(*args))

    def pay(self, bolt11: str, amount_msat: int | None = None) -> str:
        args = ["pay", bolt11, "--node", self.node]
        if amount_msat is not None:
            args += ["--amount-msat", str(amount_msat)]
        return fakenode(*args)

    def fail_next(self, reason: str = "no_route") -> None:
        fakenode("fail-next", "--node", self.node, "--reason", reason)

    def hang_next(self) -> None:
        fakenode("hang-next", "--node", self.node)

    def resolve(self, *, succeed: bool) -> None:
        fakenode("resolve", "--succeed" if succeed else "--fail", "--node", self.node)

    def down(self) -> None:
        fakenode("down", "--node", self.node)

    def up(self) -> None:
        fakenode("up", "--node", self.node)


@pytest.fixture
def world(alpha):
    return OutsideWorld("alpha")


@pytest.fixture
def beta_world(beta):
    return OutsideWorld("beta")
