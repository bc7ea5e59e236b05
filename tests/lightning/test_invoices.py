"""Local BOLT 11 decoding: the network prefix first, then checksum, fields and signature."""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import UTC, datetime, timedelta

import bolt11 as bolt11_package
import pytest
from bech32 import bech32_decode, bech32_encode, bech32_verify_checksum, convertbits
from bolt11.models.features import Feature, Features, FeatureState
from bolt11.models.tags import TagChar, Tags
from hypothesis import given
from hypothesis import strategies as st

from lightning.backends.base import Network
from lightning.errors import InvalidInvoice, InvoiceExpired, WrongNetwork
from lightning.invoices import (
    _BECH32_VALUE,
    _bech32_encode,
    _hrp_expand,
    _polymod,
    _regroup,
    decode_bolt11,
    ensure_not_expired,
    pubkey_of,
    sign_bolt11,
)

KEY = bytes.fromhex("e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734")
PREIMAGE = bytes(range(32))
PAYMENT_HASH = hashlib.sha256(PREIMAGE).hexdigest()
SECRET = "11" * 32


def sign(network: Network = Network.REGTEST, **overrides) -> str:
    fields = {
        "private_key": KEY,
        "network": network,
        "payment_hash": PAYMENT_HASH,
        "payment_secret": SECRET,
        "amount_msat": 150_000,
        "expiry_s": 600,
        "description": "coffee",
    } | overrides
    return sign_bolt11(**fields)


def with_hrp(invoice: str, hrp: str) -> str:
    """The same data part under another human-readable part, with a valid checksum."""
    _old, data = bech32_decode(invoice)
    return bech32_encode(hrp, data)


# --- networks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "prefix"),
    [
        (Network.MAINNET, "lnbc"),
        (Network.TESTNET, "lntb"),
        (Network.SIGNET, "lntbs"),
        (Network.REGTEST, "lnbcrt"),
    ],
)
def test_each_network_decodes_only_its_own_invoices(network, prefix):
    invoice = sign(network)
    assert invoice.startswith(prefix + "1500n1")
    decoded = decode_bolt11(invoice, network=network)
    assert decoded.network == network
    assert decoded.amount_msat == 150_000
    for other in Network:
        if other != network:
            with pytest.raises(WrongNetwork) as raised:
                decode_bolt11(invoice, network=other)
            assert raised.value.code == "wrong_network"
            assert raised.value.details["invoice_network"] == network


@pytest.mark.parametrize(
    ("hrp", "service", "invoice_network"),
    [
        ("lnbcrt1500n", Network.MAINNET, Network.REGTEST),  # lnbc is a prefix of lnbcrt
        ("lnbc1500n", Network.REGTEST, Network.MAINNET),
        ("lntbs1500n", Network.TESTNET, Network.SIGNET),  # lntb is a prefix of lntbs
        ("lntb1500n", Network.SIGNET, Network.TESTNET),
        ("lnbcrt", Network.MAINNET, Network.REGTEST),
        ("lntbs", Network.TESTNET, Network.SIGNET),
    ],
)
def test_overlapping_prefixes_are_told_apart(hrp, service, invoice_network):
    invoice = with_hrp(sign(), hrp)
    with pytest.raises(WrongNetwork) as raised:
        decode_bolt11(invoice, network=service)
    assert raised.value.details["invoice_network"] == invoice_network


def test_network_is_checked_before_the_checksum():
    broken = "lnbc1500n1" + "q" * 120  # mainnet prefix, garbage data, no valid checksum
    with pytest.raises(WrongNetwork):
        decode_bolt11(broken, network=Network.REGTEST)
    with pytest.raises(InvalidInvoice):
        decode_bolt11(broken, network=Network.MAINNET)


@pytest.mark.parametrize("hrp", ["lnsb1500n", "lnxyz", "lnbcx10u"])
def test_unknown_currency_is_invalid(hrp):
    with pytest.raises(InvalidInvoice):
        decode_bolt11(with_hrp(sign(), hrp), network=Network.REGTEST)


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_msat", "hrp"),
    [
        (1, "lnbcrt10p"),
        (1_000, "lnbcrt10n"),
        (150_000, "lnbcrt1500n"),
        (123_456_789, "lnbcrt1234567890p"),
        (100_000_000, "lnbcrt1m"),
        (100_000_000_000, "lnbcrt1"),
        (100_000_000_000_000, "lnbcrt1000"),  # bolt11 2.2.0's writer would say "1" here
        (2_100_000_000_000_000_000, "lnbcrt21000000"),
    ],
)
def test_amounts(amount_msat, hrp):
    invoice = sign(amount_msat=amount_msat)
    assert invoice.startswith(hrp + "1")
    assert decode_bolt11(invoice, network=Network.REGTEST).amount_msat == amount_msat


@pytest.mark.parametrize(
    "hrp",
    [
        "lnbcrt15p",  # 1.5 msat
        "lnbcrt01u",  # leading zero
        "lnbcrt0",  # zero
        "lnbcrt10x",  # unknown multiplier
        "lnbcrt10uu",
        "lnbcrtu",
        "lnbcrt21000001",  # more than all bitcoin
    ],
)
def test_malformed_amounts_are_invalid(hrp):
    with pytest.raises(InvalidInvoice):
        decode_bolt11(with_hrp(sign(), hrp), network=Network.REGTEST)


def test_amountless():
    invoice = sign(amount_msat=None)
    assert invoice.startswith("lnbcrt1")
    assert decode_bolt11(invoice, network=Network.REGTEST).amount_msat is None


# --- fields ----------------------------------------------------------------------------------


def test_fields():
    created = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    decoded = decode_bolt11(
        sign(created_at=created, expiry_s=900, min_final_cltv_expiry=40), network=Network.REGTEST
    )
    assert decoded.payment_hash == PAYMENT_HASH
    assert decoded.description == "coffee"
    assert decoded.description_hash is None
    assert decoded.payee == pubkey_of(KEY)
    assert decoded.created_at == created and decoded.created_at.tzinfo is not None
    assert decoded.expires_at == created + timedelta(seconds=900)
    assert decoded.min_final_cltv_expiry == 40


def test_description_hash():
    digest = hashlib.sha256(b"lnurl metadata").digest()
    decoded = decode_bolt11(sign(description_hash=digest), network=Network.REGTEST)
    assert decoded.description_hash == digest.hex()
    assert decoded.description == ""


def test_longest_description_and_unicode():
    text = "é" * 319 + "x"  # 639 bytes
    assert decode_bolt11(sign(description=text), network=Network.REGTEST).description == text
    with pytest.raises(ValueError):
        sign(description=text + "x")


def test_empty_description():
    assert decode_bolt11(sign(description=""), network=Network.REGTEST).description == ""


def test_expired_invoice_decodes_but_is_not_payable():
    decoded = decode_bolt11(
        sign(created_at=datetime.now(tz=UTC) - timedelta(hours=2), expiry_s=60),
        network=Network.REGTEST,
    )
    with pytest.raises(InvoiceExpired) as raised:
        ensure_not_expired(decoded)
    assert raised.value.code == "invoice_expired"
    ensure_not_expired(decoded, now=decoded.expires_at - timedelta(seconds=1))


# --- garbage and spelling --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "   ", "hello", "lnbcrt", "lnbcrt1", "1234", "lightning:", "ln1qqqqqqqq", "🙂"]
)
def test_garbage_is_invalid(text):
    with pytest.raises(InvalidInvoice) as raised:
        decode_bolt11(text, network=Network.REGTEST)
    assert raised.value.code == "invalid_invoice"


def test_not_text_is_invalid():
    with pytest.raises(InvalidInvoice):
        decode_bolt11(None, network=Network.REGTEST)  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", [1, 6, 50, 200])
def test_truncated_is_invalid(cut):
    with pytest.raises(InvalidInvoice):
        decode_bolt11(sign()[:-cut], network=Network.REGTEST)


def test_wrong_checksum_is_invalid():
    invoice = sign()
    position = len(invoice) - 20
    swapped = "q" if invoice[position] != "q" else "p"
    with pytest.raises(InvalidInvoice) as raised:
        decode_bolt11(invoice[:position] + swapped + invoice[position + 1 :], network="regtest")
    assert "checksum" in raised.value.message


def test_bad_signature_is_invalid():
    invoice = sign(include_payee=True)
    hrp, data = bech32_decode(invoice)
    data[-10] ^= 1  # inside the signature; the checksum is recomputed
    with pytest.raises(InvalidInvoice) as raised:
        decode_bolt11(bech32_encode(hrp, data), network=Network.REGTEST)
    assert "signature" in raised.value.message
    assert decode_bolt11(invoice, network=Network.REGTEST).payee == pubkey_of(KEY)


def test_tampered_without_payee_field_recovers_another_payee():
    """Without an `n` field the payee is recovered from the signature: tampering gives a
    different payee, which the payer must notice (nodes route to the recovered key)."""
    hrp, data = bech32_decode(sign())
    tampered = bech32_encode(hrp.replace("1500n", "1600n"), data)
    try:
        decoded = decode_bolt11(tampered, network=Network.REGTEST)
    except InvalidInvoice:
        return  # recovery may also fail outright
    assert decoded.payee != pubkey_of(KEY)


def test_uppercase_uri_and_whitespace_are_accepted():
    invoice = sign()
    for text in (
        invoice.upper(),
        f"lightning:{invoice}",
        f"LIGHTNING:{invoice.upper()}",
        f"Lightning:{invoice}",
        f"  {invoice}\n",
    ):
        assert decode_bolt11(text, network=Network.REGTEST).payment_hash == PAYMENT_HASH


def test_mixed_case_is_invalid():
    invoice = sign()
    with pytest.raises(InvalidInvoice):
        decode_bolt11(invoice[:20] + invoice[20:].upper(), network=Network.REGTEST)


def test_sign_refuses_bad_input():
    with pytest.raises(ValueError):
        sign(amount_msat=0)
    with pytest.raises(ValueError):
        sign(payment_hash="ab")
    with pytest.raises(ValueError):
        sign(expiry_s=0)
    with pytest.raises(ValueError):
        sign(description_hash=b"short")


def test_random_keys_roundtrip():
    for _ in range(5):
        key = os.urandom(32)
        decoded = decode_bolt11(sign(private_key=key), network=Network.REGTEST)
        assert decoded.payee == pubkey_of(key)


@pytest.mark.parametrize("case", range(12))
def test_our_encoder_writes_the_same_fields_as_the_bolt11_package(case):
    """sign_bolt11 writes the data part itself (speed); the bolt11 package is the oracle."""
    key = secrets.token_bytes(32)
    payment_hash, payment_secret = secrets.token_hex(32), secrets.token_hex(32)
    description_hash = hashlib.sha256(b"lnurl").digest() if case % 3 == 0 else None
    description = "é" * case + "coffee"
    include_payee = case % 2 == 1
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=case * 1_000_003)
    ours = sign_bolt11(
        private_key=key,
        network=Network.REGTEST,
        payment_hash=payment_hash,
        payment_secret=payment_secret,
        amount_msat=None,
        expiry_s=60 + case * 997,
        description=description,
        description_hash=description_hash,
        created_at=moment,
        include_payee=include_payee,
    )
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash)
    tags.add(TagChar.payment_secret, payment_secret)
    if description_hash:
        tags.add(TagChar.description_hash, description_hash.hex())
    else:
        tags.add(TagChar.description, description)
    tags.add(TagChar.expire_time, 60 + case * 997)
    tags.add(TagChar.min_final_cltv_expiry, 18)
    required = FeatureState.required
    tags.add(
        TagChar.features,
        Features.from_feature_list(
            {Feature.var_onion_optin: required, Feature.payment_secret: required}
        ),
    )
    if include_payee:
        tags.add(TagChar.payee, pubkey_of(key))
    theirs = bolt11_package.encode(
        bolt11_package.Bolt11(currency="bcrt", date=int(moment.timestamp()), tags=tags),
        key.hex(),
        keep_payee=include_payee,
    )
    assert bech32_decode(ours)[1][:-104] == bech32_decode(theirs)[1][:-104]
    assert decode_bolt11(ours, network=Network.REGTEST).payment_hash == payment_hash


# --- our bech32 against the bech32 package (BIP 173's reference code) --------------------


@given(st.lists(st.integers(0, 31), max_size=400), st.booleans())
def test_regroup_5_to_8_is_convertbits(words, pad):
    assert _regroup(words, 5, 8, pad=pad) == convertbits(words, 5, 8, pad)


@given(st.binary(max_size=300), st.booleans())
def test_regroup_8_to_5_is_convertbits(data, pad):
    assert _regroup(data, 8, 5, pad=pad) == convertbits(data, 8, 5, pad)


@given(st.sampled_from(["lnbc", "lnbcrt25u", "lntb", "lntbs1m"]), st.lists(st.integers(0, 31)))
def test_checksum_is_bip173(hrp, words):
    encoded = _bech32_encode(hrp, words)
    assert encoded == bech32_encode(hrp, words)
    all_words = [_BECH32_VALUE[char] for char in encoded[len(hrp) + 1 :]]
    assert bech32_verify_checksum(hrp, all_words)
    assert _polymod(_hrp_expand(hrp) + all_words) == 1
    damaged = [all_words[0] ^ 1, *all_words[1:]]
    assert _polymod(_hrp_expand(hrp) + damaged) != 1


# --- read without verifying (lightning.payments, for strings compared with our own) ---------


@pytest.mark.parametrize("include_payee", [False, True])
@pytest.mark.parametrize("amount_msat", [None, 1, 150_000])
def test_unverified_read_gives_the_same_fields_but_no_payee(include_payee, amount_msat):
    invoice = sign(amount_msat=amount_msat, include_payee=include_payee)
    verified = decode_bolt11(invoice, network=Network.REGTEST)
    unverified = decode_bolt11(invoice, network=Network.REGTEST, verify=False)
    assert unverified.payee == "" and verified.payee
    for field in type(verified).__dataclass_fields__:
        if field != "payee":
            assert getattr(unverified, field) == getattr(verified, field), field


def test_unverified_read_skips_checksum_and_signature_only():
    invoice = sign()
    separator = invoice.rfind("1")
    # the last data character before the checksum is part of the signature
    tampered = invoice[:-7] + ("q" if invoice[-7] != "q" else "p") + invoice[-6:]
    with pytest.raises(InvalidInvoice):
        decode_bolt11(tampered, network=Network.REGTEST)
    assert decode_bolt11(tampered, network=Network.REGTEST, verify=False).payment_hash == (
        decode_bolt11(invoice, network=Network.REGTEST).payment_hash
    )
    # what is not the checksum's or the signature's to catch is still refused
    with pytest.raises(WrongNetwork):
        decode_bolt11(invoice, network=Network.MAINNET, verify=False)
    with pytest.raises(InvalidInvoice):
        decode_bolt11(invoice[: separator + 20], network=Network.REGTEST, verify=False)
