"""Template filters for money (integers only) and QR codes."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from accounts.qr import lightning_qr_svg

register = template.Library()


@register.filter
def msat(value: int | None) -> str:
    """12345678 -> "12,345,678"."""
    if value is None:
        return "—"
    return f"{int(value):,}"


@register.filter
def sat(value: int | None) -> str:
    """Millisatoshi shown as satoshi with integer arithmetic: 12345678 -> "12,345.678",
    5000 -> "5"."""
    if value is None:
        return "—"
    amount = int(value)
    sign = "-" if amount < 0 else ""
    whole, milli = divmod(abs(amount), 1000)
    fraction = f".{milli:03d}".rstrip("0") if milli else ""
    return f"{sign}{whole:,}{fraction}"


@register.filter
def signed_sat(value: int) -> str:
    return f"+{sat(value)}" if int(value) > 0 else sat(value)


@register.filter
def lightning_qr(bolt11: str) -> SafeString:
    """{{ invoice.bolt11|lightning_qr }}: the invoice as an inline SVG QR code."""
    return lightning_qr_svg(bolt11)
