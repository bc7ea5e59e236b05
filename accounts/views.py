"""The web portal (session login). Thin: each view calls selectors/services and renders.

Deposit and withdrawal pages plug in here: register views under the URL names `deposit` and
`withdraw` (see templates/portal/_money_actions.html, which links them when they exist)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.forms import ApiKeyForm
from accounts.selectors import api_keys_of, user_statement, withdrawal_allowance
from accounts.services import AccountsError, api_key_issue, api_key_revoke
from ledger.selectors import user_pending_msat

STATEMENT_PAGE_SIZE = 20


def _cursor(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() and len(raw) < 19 else None


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    user = request.user
    before = _cursor(request.GET.get("before"))
    statement = user_statement(user=user, before=before, limit=STATEMENT_PAGE_SIZE)
    allowance = withdrawal_allowance(user=user)
    context = {
        "balance_msat": allowance.balance_msat,
        "pending_msat": user_pending_msat(user=user),
        "statement": statement,
        "paginated": before is not None,
        "limits": allowance.limits,
        "daily_withdrawn_msat": allowance.withdrawn_today_msat,
    }
    return render(request, "portal/dashboard.html", context)


@never_cache
@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    """List keys; POST creates one and shows its plaintext in this response only (never
    stored, never put in a message or the session)."""
    new_key = None
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            new_key, plaintext = api_key_issue(
                user=request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
            )
        except AccountsError as error:
            form.add_error(None, error.message)
        else:
            new_key.plaintext = plaintext
            form = ApiKeyForm()
    context = {"form": form, "keys": api_keys_of(user=request.user), "new_key": new_key}
    return render(request, "portal/api_keys.html", context)


@require_POST
@login_required
def api_key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    api_key = get_object_or_404(api_keys_of(user=request.user), pk=pk)
    api_key_revoke(api_key=api_key)
    messages.success(request, f"The key “{api_key.name}” ({api_key.display_prefix}) is revoked.")
    return redirect("api-keys")
