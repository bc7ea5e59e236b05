"""Scopes: each API view names the scope it needs (`required_scope`); a key without it gets
403 scope_required before the view does anything."""

from __future__ import annotations

from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.api.errors import ScopeRequired
from accounts.models import ApiKey


class HasApiScope(BasePermission):
    """Authenticated by an API key that has the view's `required_scope` (a view that sets
    `required_scope = None` only needs a valid key)."""

    def has_permission(self, request: Request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise NotAuthenticated()
        scope = getattr(view, "required_scope", None)
        if scope is not None and not api_key.has_scope(scope):
            raise ScopeRequired(scope)
        return True
