"""QR codes as inline SVG (segno), for deposit invoices in the portal."""

from __future__ import annotations

import segno
from django.utils.safestring import SafeString, mark_safe


def qr_svg(data: str, *, scale: int = 4, border: int = 2) -> SafeString:
    """An <svg> element drawing `data` as a QR code, ready to put in a template. The data is
    drawn as modules only (no text node), so nothing in it needs escaping."""
    code = segno.make(data, error="m", micro=False)
    svg = code.svg_inline(scale=scale, border=border, dark="#111111", light="#ffffff")
    return mark_safe(svg)  # noqa: S308 - segno's own markup; the data is drawn, not embedded


def lightning_qr_svg(bolt11: str, *, scale: int = 4) -> SafeString:
    """A BOLT 11 invoice as wallets expect to scan it: `LIGHTNING:<INVOICE>` in upper case
    (bech32 is case-insensitive, and upper case fits QR's compact alphanumeric mode)."""
    return qr_svg(f"lightning:{bolt11.strip()}".upper(), scale=scale)
