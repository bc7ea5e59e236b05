import pytest

from ledger import services


@pytest.fixture
def node_account(db):
    return services.node_asset_account_get_or_create(node_name="testnode")


@pytest.fixture
def in_flight(db):
    return services.system_account_get_or_create(code=services.WITHDRAWALS_IN_FLIGHT)


@pytest.fixture
def funded(make_user, node_account):
    """A user whose account holds `amount_msat`, deposited from the node."""

    def fund(amount_msat: int, user=None):
        user = user or make_user()
        account = services.user_account_get_or_create(user=user)
        if amount_msat:
            services.transfer(
                idempotency_key=f"test-deposit:{user.uuid}:{amount_msat}",
                kind="deposit",
                debit=node_account,
                credit=account,
                amount_msat=amount_msat,
            )
        account.refresh_from_db()
        return user, account

    return fund
