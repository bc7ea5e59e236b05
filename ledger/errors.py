"""Errors raised by ledger services. Each carries a stable machine-readable `code`."""


class LedgerError(Exception):
    code = "ledger_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InsufficientBalance(LedgerError):
    code = "insufficient_balance"


class UnbalancedJournal(LedgerError):
    code = "unbalanced_journal"


class InvalidPosting(LedgerError):
    code = "invalid_posting"


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for a journal with different postings."""

    code = "idempotency_conflict"


class PendingTransferResolved(LedgerError):
    """Post or void of a pending transfer that was already resolved the other way."""

    code = "pending_transfer_resolved"


class AlreadyReversed(LedgerError):
    code = "already_reversed"
