"""With REDIS_URL set, the scheduled jobs use django-q2's Redis broker (docker/compose.yaml
does): the broker imports, connects, and carries a task the app enqueues. Needs a Redis
server: TEST_REDIS_URL (.ci/run sets it; the test uses that database number only)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "")

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs Redis (set TEST_REDIS_URL)")

CHECK = """
import django
django.setup()
from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from django_q.tasks import async_task

broker = get_broker()
assert type(broker).__name__ == "Redis", type(broker)
assert broker.ping()
broker.purge_queue()
task_id = async_task("math.floor", 2.5, broker=broker)
assert broker.queue_size() == 1
(_, package), = broker.dequeue()
task = SignedPackage.loads(package)
assert (task["id"], task["func"], task["args"]) == (task_id, "math.floor", (2.5,)), task
broker.purge_queue()
print("redis broker ok")
"""


def test_jobs_run_through_redis(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SATLEDGER_VAR_DIR": str(tmp_path),
        "DEBUG": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "redis broker ok" in result.stdout
