"""Property-based test of the daily withdrawal window: Hypothesis drives counts and give-backs
at random moments over several days against a plain-Python model of the rule the README
states (a withdrawal counts until 24 hours after the end of its minute, less those given back,
except a give-back in the last RELEASE_MARGIN of that time). After every step what the window
reports equals the model, and a count is refused exactly when the model says it would pass
the limit. Each example runs in a savepoint rolled back at its end. Runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import User
from accounts.selectors import withdrawal_allowance
from accounts.services import (
    RELEASE_MARGIN,
    minute_of,
    window_start,
    withdrawal_window_count,
    withdrawal_window_release,
)
from lightning.errors import LimitExceeded

pytestmark = pytest.mark.django_db

LIMIT = 1_000_000
START = datetime(2026, 11, 1, 9, 17, 23, tzinfo=UTC)
_serial = itertools.count()


@dataclass
class Counted:
    at: datetime
    amount: int
    given_back: bool = False


def model_withdrawn(counted: list[Counted], now: datetime) -> int:
    start = window_start(now)
    return sum(c.amount for c in counted if not c.given_back and minute_of(c.at) >= start)


steps = st.lists(
    st.tuples(
        # how far the clock moves first: within the minute, across minutes, hours, a day
        st.sampled_from([0, 1, 59, 61, 3_600, 22 * 3_600, 23 * 3_600 + 30 * 60, 86_400]),
        st.sampled_from(["count", "count", "give_back", "read"]),
        st.integers(min_value=1, max_value=600_000),  # amount of a count
        st.integers(min_value=0, max_value=50),  # which earlier count is given back
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_the_window_follows_the_rule(steps):
    with transaction.atomic():
        user = User.objects.create_user(username=f"window{next(_serial)}")
        counted: list[Counted] = []
        now = START
        for advance, operation, amount, pick in steps:
            now += timedelta(seconds=advance)
            if operation == "count":
                allowed = model_withdrawn(counted, now) + amount <= LIMIT
                try:
                    with transaction.atomic():
                        withdrawal_window_count(
                            user=user, amount_msat=amount, daily_limit_msat=LIMIT, now=now
                        )
                except LimitExceeded:
                    assert not allowed
                else:
                    assert allowed
                    counted.append(Counted(at=now, amount=amount))
            elif operation == "give_back" and counted:
                target = counted[pick % len(counted)]
                if target.given_back:
                    continue  # a withdrawal fails once
                expected = minute_of(target.at) >= window_start(now) + RELEASE_MARGIN
                with transaction.atomic():
                    given = withdrawal_window_release(
                        user_id=user.pk, amount_msat=target.amount, counted_at=target.at, now=now
                    )
                assert given == expected
                target.given_back = given
            assert withdrawal_allowance(user=user, now=now).withdrawn_today_msat == (
                model_withdrawn(counted, now)
            )
        transaction.set_rollback(True)
