"""Rate limit per API key (DRF throttling, rate from settings.API_RATE_LIMIT)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Counts requests per API key id in the default cache. Requests without a key are not
    counted here (they are refused before any work)."""

    scope = "api_key"
    cache_format = "throttle:api-key:%(ident)s"

    def get_rate(self) -> str:
        return settings.API_RATE_LIMIT  # read per request, so settings overrides apply

    def get_cache_key(self, request: Request, view) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"ident": request.auth.pk}
