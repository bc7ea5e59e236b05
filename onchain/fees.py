"""Splitting a batch transaction's fee among its withdrawals."""

from __future__ import annotations

from collections.abc import Sequence


def split_fee(*, fee_msat: int, amounts: Sequence[int]) -> list[int]:
    """Largest-remainder split of `fee_msat` in proportion to `amounts` (all > 0).

    Each part is floor(fee * amount / total), then the msat left over go one each to the
    parts with the largest fractional remainders (ties: earlier position first). So the parts
    are integers >= 0, sum to `fee_msat` exactly, and each is within 1 msat of its exact
    proportional share. Integer arithmetic only."""
    if fee_msat < 0:
        raise ValueError("the fee cannot be negative")
    if not amounts or any(amount <= 0 for amount in amounts):
        raise ValueError("amounts must be positive")
    total = sum(amounts)
    parts: list[int] = []
    remainders: list[tuple[int, int]] = []
    for index, amount in enumerate(amounts):
        share, remainder = divmod(fee_msat * amount, total)
        parts.append(share)
        remainders.append((-remainder, index))
    left = fee_msat - sum(parts)  # < len(amounts): each floor lost less than 1
    for _, index in sorted(remainders)[:left]:
        parts[index] += 1
    return parts
