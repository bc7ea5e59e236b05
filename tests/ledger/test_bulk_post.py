"""pending_transfers_post_many must do exactly what pending_transfer_post does, one by one."""

import pytest

from ledger import services
from ledger.checks import run_checks
from ledger.errors import IdempotencyConflict, InvalidPosting, PendingTransferResolved
from ledger.models import Journal, PendingTransfer


@pytest.fixture
def reserved(funded, in_flight):
    def reserve(count: int, amount_msat: int = 10_000):
        rows = []
        for index in range(count):
            user, account = funded(amount_msat * 2)
            services.pending_transfer_reserve(
                key=f"bulk:{user.uuid}:{index}",
                kind="withdrawal_reserve",
                debit=account,
                holding=in_flight,
                amount_msat=amount_msat,
            )
            rows.append((f"bulk:{user.uuid}:{index}", account))
        return rows

    return reserve


def test_same_result_as_one_by_one(reserved, node_account, in_flight):
    rows = reserved(6)
    posts = [
        services.PendingPost(key=key, destinations=[(node_account, 7_000 + i)], memo="m")
        for i, (key, _) in enumerate(rows)
    ]
    assert services.pending_transfers_post_many(posts=posts, kind="withdrawal_settle") == 6
    for i, (key, account) in enumerate(rows):
        account.refresh_from_db()
        assert account.balance_msat == 20_000 - 10_000 + (3_000 - i)
        pending = PendingTransfer.objects.get(key=key)
        assert pending.state == "posted"
        assert pending.resolve_journal.idempotency_key == f"{key}:post"
    assert run_checks().ok


def test_replay_posts_nothing_and_conflict_is_refused(reserved, node_account):
    rows = reserved(3)
    posts = [services.PendingPost(key=k, destinations=[(node_account, 9_000)]) for k, _ in rows]
    services.pending_transfers_post_many(posts=posts, kind="withdrawal_settle")
    journals = Journal.objects.count()
    assert services.pending_transfers_post_many(posts=posts, kind="withdrawal_settle") == 0
    assert Journal.objects.count() == journals
    # One already posted by the single-transfer service, two new ones.
    more = reserved(2)
    services.pending_transfer_post(
        key=more[0][0], kind="withdrawal_settle", destinations=[(node_account, 9_000)]
    )
    mixed = [services.PendingPost(key=k, destinations=[(node_account, 9_000)]) for k, _ in more]
    assert services.pending_transfers_post_many(posts=mixed, kind="withdrawal_settle") == 1
    with pytest.raises(IdempotencyConflict):
        services.pending_transfers_post_many(
            posts=[services.PendingPost(key=rows[0][0], destinations=[(node_account, 8_000)])],
            kind="withdrawal_settle",
        )
    assert run_checks().ok


def test_voided_or_overdrawn_is_refused_and_nothing_posts(reserved, node_account):
    rows = reserved(3)
    services.pending_transfer_void(key=rows[1][0], kind="withdrawal_refund")
    journals = Journal.objects.count()
    posts = [services.PendingPost(key=k, destinations=[(node_account, 9_000)]) for k, _ in rows]
    with pytest.raises(PendingTransferResolved):
        services.pending_transfers_post_many(posts=posts, kind="withdrawal_settle")
    with pytest.raises(InvalidPosting):
        services.pending_transfers_post_many(
            posts=[services.PendingPost(key=rows[0][0], destinations=[(node_account, 10_001)])],
            kind="withdrawal_settle",
        )
    with pytest.raises(InvalidPosting):
        services.pending_transfers_post_many(posts=[posts[0], posts[0]], kind="withdrawal_settle")
    assert Journal.objects.count() == journals
    assert PendingTransfer.objects.get(key=rows[0][0]).state == "pending"
    assert run_checks().ok


def test_whole_reserve_used_and_zero_destination(reserved, node_account):
    rows = reserved(2)
    services.pending_transfers_post_many(
        posts=[
            services.PendingPost(key=rows[0][0], destinations=[(node_account, 10_000)]),
            services.PendingPost(key=rows[1][0], destinations=[(node_account, 0)]),
        ],
        kind="withdrawal_settle",
    )
    assert run_checks().ok
    assert PendingTransfer.objects.filter(state="posted").count() == 2
