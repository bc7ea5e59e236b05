"""BOLT 11 invoices, decoded locally (no node needed) and signed (for the simulated node).

`decode_bolt11` is what the service trusts about an invoice a user hands us. It works in the
order a careful reader should:

1. normalise: strip whitespace and a `lightning:` URI prefix; BOLT 11 (like bech32) allows an
   all-uppercase string (QR codes) but never mixed case;
2. check the human-readable part *before anything else*: `ln` + the currency prefix of the
   configured network + an optional amount. The prefixes overlap (`lnbc` is a prefix of
   `lnbcrt`, `lntb` of `lntbs`), so the currency is the run of letters after `ln` up to the
   amount digits, compared exactly, never with `startswith`. An invoice of another network
   raises `WrongNetwork`, whatever else is wrong with it;
3. parse the amount with integers (a `p` amount must be a whole number of millisatoshi);
4. read the data part directly (`_parse_data_part`): bech32 checksum, timestamp, tagged
   fields, and the signature (the signing key recovered from it, compared with the `n` field
   when present); an invoice without a payment secret is refused, as nodes refuse it. This
   is done here rather than with the `bolt11` package, whose bit-by-bit reader cost ~5 ms
   an invoice, the largest CPU cost of a withdrawal request; the package is the oracle of
   tests/lightning/test_bolt11_spec_vectors.py and test_invoices.py.

Anything malformed raises `InvalidInvoice`. Both errors are the flow errors of
`lightning/errors.py` (stable `code`, a sentence a person understands).
"""

from __future__ import annotations

import functools
import hashlib
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from coincurve import PrivateKey, PublicKey

from lightning.backends.base import BOLT11_PREFIX, DecodedInvoice, Network
from lightning.errors import InvalidInvoice, InvoiceExpired, WrongNetwork

__all__ = [
    "InvalidInvoice",
    "InvoiceExpired",
    "WrongNetwork",
    "decode_bolt11",
    "ensure_not_expired",
    "normalize_bolt11",
    "preimage_proves",
    "sign_bolt11",
]

URI_SCHEME = "lightning:"
# The currency part of each network's prefix: "lnbcrt" -> "bcrt".
NETWORK_BY_CURRENCY: dict[str, Network] = {
    prefix.removeprefix("ln"): network for network, prefix in BOLT11_PREFIX.items()
}
MSAT_PER_BTC = 100_000_000_000
MAX_AMOUNT_MSAT = 21_000_000 * MSAT_PER_BTC
MAX_DESCRIPTION_BYTES = 639  # a tagged field holds at most 1023 5-bit words
DEFAULT_MIN_FINAL_CLTV_EXPIRY = 18
DEFAULT_EXPIRY_S = 3600  # BOLT 11: an invoice without `x` expires after an hour
SIGNATURE_WORDS = 104  # 65 bytes in 5-bit words
# hrp = "ln" + currency (letters) + amount (digits, then an optional multiplier letter)
_HRP = re.compile(r"ln([a-z]+)(\d*)(.*)", re.DOTALL)
# msat per unit of the amount, per multiplier; "p" (0.1 msat) is handled separately.
_MSAT_PER_UNIT = {"": MSAT_PER_BTC, "m": 100_000_000, "u": 100_000, "n": 100}


def normalize_bolt11(text: str) -> str:
    """The invoice in canonical form: trimmed, without `lightning:`, lowercase. Raises
    InvalidInvoice for an empty or mixed-case string."""
    if not isinstance(text, str):
        raise InvalidInvoice("an invoice must be text")
    value = text.strip()
    if value[: len(URI_SCHEME)].lower() == URI_SCHEME:
        value = value[len(URI_SCHEME) :].strip()
    if not value:
        raise InvalidInvoice("the invoice is empty")
    if value != value.lower() and value != value.upper():
        raise InvalidInvoice(
            "this is not a valid Lightning invoice: it mixes upper and lower case letters"
        )
    return value.lower()


def _network_and_amount(hrp: str, *, network: Network) -> int | None:
    match = _HRP.fullmatch(hrp)
    if match is None:
        raise InvalidInvoice("this is not a Lightning invoice (it should start with ln)")
    currency, digits, multiplier = match.groups()
    invoice_network = NETWORK_BY_CURRENCY.get(currency)
    if invoice_network is None:
        raise InvalidInvoice(
            f"this Lightning invoice is for an unknown network (prefix ln{currency})",
            prefix=f"ln{currency}",
        )
    if invoice_network != network:
        raise WrongNetwork(
            f"this invoice is for {invoice_network}, but this service uses {network}",
            invoice_network=str(invoice_network),
            expected_network=str(network),
        )
    if not digits:
        if multiplier:
            raise InvalidInvoice("the invoice's amount is malformed")
        return None
    if multiplier not in ("", "m", "u", "n", "p"):
        raise InvalidInvoice("the invoice's amount is malformed")
    if digits.startswith("0"):
        raise InvalidInvoice("the invoice's amount is malformed (leading zero or zero)")
    value = int(digits)
    if multiplier == "p":
        if value % 10:
            raise InvalidInvoice("the invoice's amount is not a whole number of millisatoshi")
        amount_msat = value // 10
    else:
        amount_msat = value * _MSAT_PER_UNIT[multiplier]
    if amount_msat > MAX_AMOUNT_MSAT:
        raise InvalidInvoice("the invoice's amount is larger than all bitcoin")
    return amount_msat


def decode_bolt11(bolt11_text: str, *, network: Network, verify: bool = True) -> DecodedInvoice:
    """Decode and verify a BOLT 11 invoice for `network`. Raises WrongNetwork (checked first)
    or InvalidInvoice. Does not check expiry: see `ensure_not_expired`.

    `verify=False` skips the checksum and the signature (2/3 of the CPU; `payee` is then
    empty): only for a string about to be compared whole with an invoice our own node made
    (lightning.payments); anything else must be verified. It may name another defect, or
    none, for a damaged string: decode it verified for the error to show."""
    value = normalize_bolt11(bolt11_text)
    separator = value.rfind("1")
    if separator < 1:
        raise InvalidInvoice("this is not a Lightning invoice")
    amount_msat = _network_and_amount(value[:separator], network=Network(network))
    parsed = _parse_data_part(
        value, hrp=value[:separator], words_text=value[separator + 1 :], verify=verify
    )
    if parsed.payment_secret is None:
        # Nodes have refused invoices without one since 2021 (payment_secret is required).
        raise InvalidInvoice("this Lightning invoice has no payment secret; ask for a new one")
    try:
        created_at = datetime.fromtimestamp(parsed.timestamp, tz=UTC)
        expires_at = created_at + timedelta(seconds=parsed.expiry_s)
    except (OverflowError, ValueError):
        raise InvalidInvoice("the invoice's expiry is out of range") from None
    return DecodedInvoice(
        payment_hash=parsed.payment_hash,
        amount_msat=amount_msat,
        description=parsed.description,
        description_hash=parsed.description_hash,
        payee=parsed.payee,
        created_at=created_at,
        expires_at=expires_at,
        network=Network(network),
        min_final_cltv_expiry=parsed.min_final_cltv_expiry,
    )


@dataclass(frozen=True, slots=True)
class _DataPart:
    timestamp: int
    payment_hash: str
    payment_secret: str | None
    description: str
    description_hash: str | None
    expiry_s: int
    min_final_cltv_expiry: int
    payee: str


def _words_to_bytes(words: list[int]) -> bytes:
    data = _regroup(words, 5, 8, pad=False)
    if data is None:
        raise InvalidInvoice("this Lightning invoice is damaged: a field has stray bits")
    return bytes(data)


def _words_to_int(words: list[int]) -> int:
    value = 0
    for word in words:
        value = value << 5 | word
    return value


def _parse_data_part(value: str, *, hrp: str, words_text: str, verify: bool = True) -> _DataPart:
    """BOLT 11's data part, read directly (the bolt11 package reads it bit by bit through
    bitstring: ~5 ms an invoice, the largest CPU cost of a withdrawal request): bech32
    checksum, timestamp, tagged fields, then the signature, checked by recovering the signing
    key (and comparing it with the `n` field when present). Unknown fields are skipped, and
    p, h, s and n fields of the wrong length are skipped, as BOLT 11 tells readers."""
    try:
        words = [_BECH32_VALUE[char] for char in words_text]
    except KeyError:
        raise InvalidInvoice("this Lightning invoice has characters bech32 does not use") from None
    if len(words) < 7 + SIGNATURE_WORDS + 6 or (verify and _polymod(_hrp_expand(hrp) + words) != 1):
        raise InvalidInvoice(
            "this Lightning invoice is damaged: its checksum does not match (mistyped or "
            "truncated?)"
        )
    data, signature_words = words[:-6][:-SIGNATURE_WORDS], words[:-6][-SIGNATURE_WORDS:]
    fields: dict[str, list[int]] = {}
    position = 7
    while position < len(data):
        if position + 3 > len(data):
            raise InvalidInvoice("this Lightning invoice is damaged: a field is cut short")
        tag = _BECH32_CHARSET[data[position]]
        length = data[position + 1] << 5 | data[position + 2]
        field = data[position + 3 : position + 3 + length]
        if len(field) != length:
            raise InvalidInvoice("this Lightning invoice is damaged: a field is cut short")
        expected = {"p": 52, "h": 52, "s": 52, "n": 53}.get(tag)
        if tag not in fields and (expected is None or length == expected):
            fields[tag] = field
        position += 3 + length
    if "p" not in fields:
        raise InvalidInvoice("this Lightning invoice has no payment hash")
    if "d" not in fields and "h" not in fields:
        raise InvalidInvoice("this Lightning invoice has neither a description nor its hash")
    try:
        description = _words_to_bytes(fields["d"]).decode() if "d" in fields else ""
    except UnicodeDecodeError:
        raise InvalidInvoice("the invoice's description is not valid UTF-8") from None
    signer = _signer(hrp=hrp, data=data, signature_words=signature_words) if verify else b""
    if verify and "n" in fields and _words_to_bytes(fields["n"]) != signer:
        raise InvalidInvoice("the invoice's signature is not valid")
    return _DataPart(
        timestamp=_words_to_int(data[:7]),
        payment_hash=_words_to_bytes(fields["p"]).hex(),
        payment_secret=_words_to_bytes(fields["s"]).hex() if "s" in fields else None,
        description=description,
        description_hash=_words_to_bytes(fields["h"]).hex() if "h" in fields else None,
        expiry_s=_words_to_int(fields["x"]) if "x" in fields else DEFAULT_EXPIRY_S,
        min_final_cltv_expiry=(
            _words_to_int(fields["c"]) if "c" in fields else DEFAULT_MIN_FINAL_CLTV_EXPIRY
        ),
        payee=signer.hex(),
    )


def _signer(*, hrp: str, data: list[int], signature_words: list[int]) -> bytes:
    """The compressed public key that signed the invoice, recovered from its signature."""
    signature = _words_to_bytes(signature_words)
    message = hrp.encode() + bytes(_regroup(data, 5, 8, pad=True))
    try:
        return PublicKey.from_signature_and_message(signature, message).format(compressed=True)
    except Exception:  # coincurve refuses an impossible signature or recovery id
        raise InvalidInvoice("the invoice's signature is not valid") from None


def preimage_proves(*, preimage: str, payment_hash: str) -> bool:
    """Whether `preimage` (hex) is the secret whose SHA-256 is `payment_hash` (hex): a
    payment's proof. Anything that is not hex proves nothing."""
    try:
        return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash.lower()
    except ValueError:
        return False


def ensure_not_expired(decoded: DecodedInvoice, *, now: datetime | None = None) -> None:
    """Raise InvoiceExpired when the invoice can no longer be paid."""
    moment = now or datetime.now(tz=UTC)
    if decoded.expires_at <= moment:
        raise InvoiceExpired("this invoice has expired", expired_at=decoded.expires_at.isoformat())


def sign_bolt11(
    *,
    private_key: bytes,
    network: Network,
    payment_hash: str,
    payment_secret: str,
    amount_msat: int | None,
    expiry_s: int,
    description: str = "",
    description_hash: bytes | None = None,
    created_at: datetime | None = None,
    min_final_cltv_expiry: int = DEFAULT_MIN_FINAL_CLTV_EXPIRY,
    include_payee: bool = False,
) -> str:
    """A real BOLT 11 invoice signed with `private_key` (32 bytes) for `network`: payment hash
    and secret (hex, 32 bytes each), the description or (LNURL) its hash, expiry, final CLTV,
    and the feature bits today's nodes require (var_onion_optin, payment_secret). With
    `include_payee` the `n` field names the payee (readers then verify against it instead of
    recovering the key from the signature)."""
    if amount_msat is not None and not 0 < amount_msat <= MAX_AMOUNT_MSAT:
        raise ValueError("amount_msat must be positive (or None for an amountless invoice)")
    if len(bytes.fromhex(payment_hash)) != 32 or len(bytes.fromhex(payment_secret)) != 32:
        raise ValueError("payment_hash and payment_secret are 32 bytes, hex")
    if expiry_s <= 0:
        raise ValueError("expiry_s must be positive")
    if description_hash is not None and len(description_hash) != 32:
        raise ValueError("description_hash is a 32-byte SHA-256 digest")
    if description_hash is None and len(description.encode()) > MAX_DESCRIPTION_BYTES:
        raise ValueError(f"description is longer than {MAX_DESCRIPTION_BYTES} bytes")
    key = PrivateKey(private_key)
    moment = created_at or datetime.now(tz=UTC)
    currency = BOLT11_PREFIX[Network(network)].removeprefix("ln")
    # The data part is written here from BOLT 11's rules rather than with the bolt11 package's
    # encoder: that one works bit by bit through bitstring (about 5 ms an invoice, half of a
    # deposit request on the simulated node) and writes whole multiples of 1000 BTC 1000
    # times too small. tests/lightning/test_invoices.py checks every invoice made here
    # decodes, signature and fields, with the bolt11 package.
    data_words = _int_words(int(moment.timestamp()), 7)
    data_words += _bytes_field("p", bytes.fromhex(payment_hash))
    data_words += _bytes_field("s", bytes.fromhex(payment_secret))
    if description_hash is not None:
        data_words += _bytes_field("h", description_hash)
    else:
        data_words += _bytes_field("d", description.encode())
    data_words += _tagged_field("x", _int_words(expiry_s))
    data_words += _tagged_field("c", _int_words(min_final_cltv_expiry))
    data_words += _tagged_field("9", _int_words(_REQUIRED_FEATURE_BITS))
    if include_payee:
        data_words += _bytes_field("n", key.public_key.format(compressed=True))
    hrp = f"ln{currency}{amount_to_hrp(amount_msat) if amount_msat is not None else ''}"
    data_bytes = bytes(_regroup(data_words, 5, 8, pad=True))
    signature = key.sign_recoverable(hrp.encode() + data_bytes)  # r, s, recovery id
    return _bech32_encode(hrp, data_words + _regroup(signature, 8, 5, pad=True))


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_VALUE = {char: value for value, char in enumerate(_BECH32_CHARSET)}


# --- bech32 (BIP 173), written for speed: the bech32 package's bit-by-bit loops took half of
# decoding an invoice (~0.3 ms of ~0.45), on the path of every payment and deposit. Its own
# functions stay the oracle in tests/lightning/test_invoices.py.

_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
# The XOR of the generator terms selected by each value of the checksum's top five bits.
_POLYMOD_STEP = tuple(
    functools.reduce(operator.xor, (g for bit, g in enumerate(_GENERATOR) if top >> bit & 1), 0)
    for top in range(32)
)


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value ^ _POLYMOD_STEP[checksum >> 25]
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]


def _bech32_encode(hrp: str, words: list[int]) -> str:
    polymod = _polymod(_hrp_expand(hrp) + words + [0] * 6) ^ 1
    checksum = [polymod >> 5 * (5 - index) & 31 for index in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[word] for word in words + checksum)


def _regroup(values: Sequence[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int] | None:
    """BIP 173's convertbits through one big integer. Without `pad`, None when the input
    leaves a whole group or non-zero bits over."""
    accumulator = 0
    for value in values:
        accumulator = accumulator << from_bits | value
    total = len(values) * from_bits
    rest = total % to_bits
    if rest and pad:
        accumulator <<= to_bits - rest
        total += to_bits - rest
    elif rest:
        if rest >= from_bits or accumulator & ((1 << rest) - 1):
            return None
        accumulator >>= rest
        total -= rest
    count = total // to_bits
    if to_bits == 8:
        return list(accumulator.to_bytes(count, "big"))
    mask = (1 << to_bits) - 1
    return [accumulator >> shift & mask for shift in range((count - 1) * to_bits, -1, -to_bits)]


# var_onion_optin (bit 8) and payment_secret (bit 14), both required (even bits).
_REQUIRED_FEATURE_BITS = (1 << 8) | (1 << 14)


def _int_words(value: int, min_words: int = 1) -> list[int]:
    """Big-endian 5-bit words of a non-negative integer, left-padded to `min_words`."""
    words = []
    while value:
        words.append(value & 31)
        value >>= 5
    words.reverse()
    return [0] * (min_words - len(words)) + words


def _tagged_field(tag: str, words: list[int]) -> list[int]:
    """A BOLT 11 tagged field: type, 10-bit data length, data."""
    return [_BECH32_VALUE[tag], len(words) >> 5, len(words) & 31, *words]


def _bytes_field(tag: str, data: bytes) -> list[int]:
    return _tagged_field(tag, _regroup(data, 8, 5, pad=True))


def amount_to_hrp(amount_msat: int) -> str:
    """The shortest BOLT 11 amount for `amount_msat`: "1500n" for 150 sat."""
    pico = amount_msat * 10
    for unit, per in (("", 10**12), ("m", 10**9), ("u", 10**6), ("n", 10**3)):
        if pico % per == 0:
            return f"{pico // per}{unit}"
    return f"{pico}p"


def pubkey_of(private_key: bytes) -> str:
    """Compressed public key (hex) of a 32-byte private key: the node id / invoice payee."""
    return PrivateKey(private_key).public_key.format(compressed=True).hex()
