"""Scheduled jobs exist after migrate and each task runs; the demo setup creates its user and
the default simulated node."""

from io import StringIO

from django.core.management import call_command
from django.utils.module_loading import import_string
from django_q.models import Schedule

from accounts.models import User
from ledger.selectors import user_balance_msat
from lightning import tasks
from lightning.models import Node, NodeSnapshot
from lightning.nodes import node_add
from lightning.schedules import SCHEDULES
from lightning.services import deposit_create


def test_every_schedule_exists_and_points_at_a_real_function(db):
    for name, (func, minutes) in SCHEDULES.items():
        schedule = Schedule.objects.get(name=name)
        assert schedule.func == func and schedule.minutes == minutes and schedule.repeats == -1
        assert callable(import_string(func))


def test_tasks_run(db, make_user, world):
    user = make_user()
    invoice = deposit_create(user=user, amount_msat=3_000)
    world.pay(invoice.bolt11)
    assert tasks.poll_open_invoices()["settled"] == 1
    assert user_balance_msat(user=user) == 3_000
    assert tasks.snapshot_nodes() == {"alpha": True}
    assert NodeSnapshot.objects.filter(node__name="alpha").count() == 1
    assert tasks.track_pending_payments()["checked"] == 0
    assert tasks.checkpoint_hot_accounts() >= 1
    assert tasks.reconcile_ledger() is True


def test_demo_setup_creates_the_demo_user_and_the_default_node(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("demo", "--setup-only", stdout=out)
    password = (tmp_path / "demo-password.txt").read_text().strip()
    assert f"password {password}" in out.getvalue()
    assert User.objects.get(username="demo").check_password(password)
    assert Node.objects.get(name="default").kind == "fake"
    call_command("demo", "--setup-only", stdout=StringIO())  # idempotent
    assert User.objects.filter(username="demo").count() == 1


def test_default_node_is_not_added_when_nodes_exist(db):
    node_add(name="mine", connection="type=fake")
    call_command("ensure_default_node", stdout=StringIO())
    assert list(Node.objects.values_list("name", flat=True)) == ["mine"]
