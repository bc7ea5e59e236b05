"""`Authorization: Bearer <api key>`."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.api.errors import InvalidApiKey
from accounts.models import ApiKey, User
from accounts.selectors import api_key_for_plaintext, api_key_used
from accounts.services import api_key_touch


class ApiKeyAuthentication(BaseAuthentication):
    """Finds the key by the SHA-256 of the presented token (see accounts.services.api_key_hash).
    No Authorization header: not authenticated (401 authentication_required from the
    permission check). A header that is not a valid, unrevoked key of an active user: 401
    invalid_api_key. The token itself is never logged."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword or len(header) != 2:
            raise InvalidApiKey("Send the API key as 'Authorization: Bearer <key>'.")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidApiKey() from None
        api_key = api_key_for_plaintext(token)
        if api_key is None:
            raise InvalidApiKey("This API key is not valid.")
        if api_key.revoked_at is not None:
            raise InvalidApiKey("This API key was revoked.")
        if not api_key.user.is_active:
            raise InvalidApiKey("The account of this API key is disabled.")
        last_used_at = api_key.last_used_at
        api_key_touch(api_key=api_key)
        if api_key.last_used_at != last_used_at:
            api_key_used(api_key=api_key)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from the portal or `manage.py issue_api_key`: "
            "sl_<prefix>_<secret>.",
        }
