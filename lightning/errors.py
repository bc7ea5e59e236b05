"""Errors of the money flows, each with a stable `code` and a sentence for a person. The API
turns them into 4xx responses with this code; nothing was changed when one is raised."""


class FlowError(Exception):
    code = "flow_error"
    http_status = 400

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInvoice(FlowError):
    code = "invalid_invoice"


class WrongNetwork(FlowError):
    code = "wrong_network"


class InvoiceExpired(FlowError):
    code = "invoice_expired"


class AmountRequired(FlowError):
    code = "amount_required"


class AmountMismatch(FlowError):
    code = "amount_mismatch"


class InvalidAmount(FlowError):
    code = "invalid_amount"


class LimitExceeded(FlowError):
    code = "limit_exceeded"
    http_status = 403


class AlreadyPaid(FlowError):
    code = "already_paid"
    http_status = 409


class OwnInvoice(FlowError):
    code = "own_invoice"


class FeeLimitTooHigh(FlowError):
    code = "fee_limit_too_high"
