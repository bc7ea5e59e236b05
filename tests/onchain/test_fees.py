from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onchain.fees import split_fee


@given(
    fee=st.integers(min_value=0, max_value=10**12),
    amounts=st.lists(st.integers(min_value=1, max_value=21 * 10**14), min_size=1, max_size=300),
)
def test_split_is_exact_non_negative_and_proportional(fee, amounts):
    parts = split_fee(fee_msat=fee, amounts=amounts)
    assert len(parts) == len(amounts)
    assert sum(parts) == fee
    total = sum(amounts)
    for part, amount in zip(parts, amounts, strict=True):
        assert part >= 0
        assert abs(part - Fraction(fee * amount, total)) < 1


@given(fee=st.integers(min_value=0, max_value=10**9), count=st.integers(1, 50))
def test_equal_amounts_differ_by_at_most_one(fee, count):
    parts = split_fee(fee_msat=fee, amounts=[1000] * count)
    assert max(parts) - min(parts) <= 1


def test_examples():
    assert split_fee(fee_msat=10, amounts=[1, 1, 1]) == [4, 3, 3]
    assert split_fee(fee_msat=100, amounts=[1, 3]) == [25, 75]
    assert split_fee(fee_msat=0, amounts=[5, 7]) == [0, 0]
    assert split_fee(fee_msat=1, amounts=[1, 2]) == [0, 1]


@pytest.mark.parametrize("amounts", [[], [0], [5, -1]])
def test_rejects_bad_amounts(amounts):
    with pytest.raises(ValueError):
        split_fee(fee_msat=10, amounts=amounts)


def test_rejects_negative_fee():
    with pytest.raises(ValueError):
        split_fee(fee_msat=-1, amounts=[1])
