"""Two batch workers at once, on PostgreSQL with real threads and connections."""

import threading
from collections import Counter

import pytest
from django.db import connection

from onchain import services
from onchain.models import Batch, OnchainWithdrawal
from tests.onchain.wallet import random_address

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def run_in_threads(count: int, target) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            target()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_never_share_a_request_or_send_a_batch_twice(
    funded_user, use_wallet, settings, ledger_ok, workers
):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    settings.ONCHAIN_BATCH_MAX_OUTPUTS = 7
    use_wallet.send_delay_s = 0.02  # keep a send in flight while the others run
    users = [funded_user(1_000_000_000) for _ in range(10)]
    for index in range(60):
        services.withdrawal_request(
            user=users[index % 10], address=random_address(), amount_sat=1_000 + index
        )

    errors = run_in_threads(workers, services.batch_round)
    assert not errors, errors
    services.batch_round()  # whatever a worker left for recovery

    sent_labels = Counter(label for label, _ in use_wallet.sends)
    assert all(count == 1 for count in sent_labels.values())
    batches = Batch.objects.all()
    assert set(sent_labels) == {b.label for b in batches if b.status != "failed"}
    outputs = Counter(o[2] for b in batches if b.status != "failed" for o in b.outputs)
    assert all(count == 1 for count in outputs.values())
    assert len(outputs) == 60
    paid = Counter(address for _, sent in use_wallet.sends for address, _ in sent)
    assert all(count == 1 for count in paid.values()) and len(paid) == 60
    assert set(OnchainWithdrawal.objects.values_list("status", flat=True)) == {"broadcast"}
    ledger_ok()


def test_concurrent_recovery_sends_a_stale_batch_once(funded_user, use_wallet, settings):
    settings.ONCHAIN_BATCH_MIN_OUTPUTS = 1
    services.withdrawal_request(
        user=funded_user(100_000_000), address=random_address(), amount_sat=5_000
    )
    original = services._send
    services._send = lambda **kwargs: "unknown"  # formed, never claimed
    try:
        services.batch_round()
    finally:
        services._send = original
    use_wallet.send_delay_s = 0.05
    errors = run_in_threads(4, services.batch_round)
    assert not errors, errors
    assert len(use_wallet.sends) == 1
    assert Batch.objects.get().status == "broadcast"
