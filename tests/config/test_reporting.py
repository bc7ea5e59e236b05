"""Error reports never show connection strings, from settings or from request.META (granian
and runserver copy the process environment into it)."""

from django.test import RequestFactory
from django.views.debug import ExceptionReporter

SECRET = "hunter2"


def _request_with_secrets_in_meta():
    return RequestFactory().get(
        "/api/v1/balance",
        DATABASE_URL=f"postgres://satledger:{SECRET}-db@db:5432/satledger",
        REDIS_URL=f"redis://:{SECRET}-redis@redis:6379/0",
        LIGHTNING_DEFAULT_NODE=f"type=lnd,macaroonhex={SECRET}-macaroon",
        SOME_HARMLESS_VALUE="visible",
    )


def _fail():
    raise RuntimeError("boom")


def test_error_report_masks_connection_strings(settings):
    settings.DEBUG = True  # the technical report is what DEBUG shows and ADMINS would get
    request = _request_with_secrets_in_meta()
    try:
        _fail()
    except RuntimeError as error:
        reporter = ExceptionReporter(request, type(error), error, error.__traceback__)
        reports = [reporter.get_traceback_html(), reporter.get_traceback_text()]
    for report in reports:
        assert "visible" in report  # META is in the report...
        assert f"{SECRET}-" not in report  # ...but not the connection strings
