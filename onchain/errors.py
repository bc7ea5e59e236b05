"""Errors of the on-chain flows: a stable `code`, a sentence for a person, and nothing
changed when one is raised (the API maps them to 4xx through their `code`)."""

from lightning.errors import FlowError, LimitExceeded, WrongNetwork

__all__ = [
    "AmountTooSmall",
    "InvalidAddress",
    "LimitExceeded",
    "NotCancelable",
    "WrongNetwork",
]


class InvalidAddress(FlowError):
    code = "invalid_address"


class AmountTooSmall(FlowError):
    code = "amount_too_small"


class NotCancelable(FlowError):
    code = "not_cancelable"
    http_status = 409
