import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from lightning.connection import InvalidConnectionString, parse_connection_string
from lightning.models import Node, NodeSnapshot
from lightning.nodes import receiving_nodes, sending_nodes


def run(*args: str) -> str:
    out = StringIO()
    call_command("nodes", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("type=fake", "fake"),
        ("type=lnd-grpc;server=https://10.0.0.5:10009;macaroonfilepath=/m;certfilepath=/c", "lnd"),
        ("type=clightning;server=unix:///root/.lightning/regtest/lightning-rpc", "cln"),
        ("type=eclair;server=http://127.0.0.1:8080;password=s3cret", "eclair"),
        (" TYPE=fake ; alias=x ", "fake"),
    ],
)
def test_connection_strings(value, kind):
    assert parse_connection_string(value).kind == kind


@pytest.mark.parametrize("value", ["", "server=x", "type=bitcoind", "type=fake;novalue"])
def test_bad_connection_strings(value):
    with pytest.raises(InvalidConnectionString):
        parse_connection_string(value)


def test_secrets_are_redacted():
    parsed = parse_connection_string("type=eclair;server=http://127.0.0.1:8080;password=s3cret")
    assert "s3cret" not in parsed.redacted()
    assert "password=***" in parsed.redacted()


def test_nodes_add_list_enable_disable(db):
    run("add", "alpha", "type=fake", "--no-check")
    run(
        "add",
        "bravo",
        "type=eclair;server=http://127.0.0.1:9;password=s3cret",
        "--roles",
        "send",
        "--no-check",
    )
    rows = {row["name"]: row for row in json.loads(run("list", "--json"))}
    assert rows["alpha"]["kind"] == "fake" and rows["alpha"]["roles"] == [
        "receive",
        "send",
        "onchain",
    ]
    assert rows["bravo"]["roles"] == ["send"]
    assert "s3cret" not in run("list") + run("list", "--json")
    run("disable", "alpha")
    assert not Node.objects.get(name="alpha").enabled
    run("enable", "alpha")
    assert Node.objects.get(name="alpha").enabled
    with pytest.raises(CommandError):
        run("enable", "nope")
    with pytest.raises(CommandError):
        run("add", "alpha", "type=fake", "--no-check")
    with pytest.raises(CommandError):
        run("add", "gamma", "type=unknown", "--no-check")


def test_nodes_check_reports_health_and_snapshots(db):
    run("add", "alpha", "type=fake", "--no-check")
    report = json.loads(run("check", "alpha", "--json"))[0]
    assert report["healthy"] and report["network_ok"] and report["synced"]
    assert NodeSnapshot.objects.filter(node__name="alpha", healthy=True).exists()
    assert Node.objects.get(name="alpha").healthy


def test_nodes_check_of_unreachable_node_fails_without_leaking_the_secret(db):
    run("add", "bravo", "type=eclair;server=http://127.0.0.1:9;password=s3cret", "--no-check")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("nodes", "check", "bravo", stdout=out)
    assert "reachable FAIL" in out.getvalue()
    assert "s3cret" not in out.getvalue()
    assert not Node.objects.get(name="bravo").healthy


def test_selection_prefers_healthy_then_priority_and_respects_roles_and_limits(db):
    run("add", "slow", "type=fake", "--priority", "5", "--no-check")
    run("add", "fast", "type=fake", "--priority", "50", "--no-check")
    run("add", "sendonly", "type=fake", "--roles", "send", "--no-check")
    Node.objects.filter(name="fast").update(healthy=True)
    assert [node.name for node in receiving_nodes(amount_msat=1_000)] == ["fast", "slow"]
    Node.objects.filter(name="slow").update(healthy=True, max_receive_msat=500)
    assert [node.name for node in receiving_nodes(amount_msat=1_000)] == ["fast"]
    fast = Node.objects.get(name="fast")
    NodeSnapshot.objects.create(node=fast, healthy=True, channel_local_msat=100)
    assert "fast" not in [node.name for node in sending_nodes(amount_msat=1_000)]
    assert "sendonly" in [node.name for node in sending_nodes(amount_msat=1_000)]
