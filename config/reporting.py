"""What Django's error reports (the DEBUG page, mail to ADMINS, any handler that renders the
request) may show of settings and of request.META.

Django masks names containing API, AUTH, TOKEN, KEY, SECRET, PASS, SIGNATURE or HTTP_COOKIE.
Connection strings carry credentials under other names (DATABASE_URL, REDIS_URL, a node's
connection string), and servers that copy the process environment into every request's META,
as granian (scripts/serve) and Django's runserver do, put them there too: mask those as well."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class SecretsReporterFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE"
        "|URL|DSN|DATABASE|CONNECTION|NODE|MACAROON|CREDENTIAL|CERT",
        flags=re.IGNORECASE,
    )
