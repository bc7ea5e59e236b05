import hashlib
import itertools

import pytest
from embit import base58
from embit.bech32 import Encoding, bech32_encode, convertbits, encode

from lightning.backends.base import Network
from onchain.addresses import validate_address
from onchain.errors import InvalidAddress, WrongNetwork

REGTEST, TESTNET, SIGNET, MAINNET = (
    Network.REGTEST,
    Network.TESTNET,
    Network.SIGNET,
    Network.MAINNET,
)


_seed = itertools.count()


def _bytes(size: int) -> bytes:
    """Deterministic bytes: parameter ids must be the same in every xdist worker."""
    return hashlib.sha256(f"address-{next(_seed)}".encode()).digest()[:size].ljust(size, b"\x01")


def segwit(hrp: str, version: int, size: int, encoding: int | None = None) -> str:
    """A segwit address; with `encoding`, force bech32 or bech32m whatever the version."""
    program = list(_bytes(size))
    if encoding is None:
        return encode(hrp, version, program)
    return bech32_encode(encoding, hrp, [version, *convertbits(program, 8, 5)])


def base58_address(version: int) -> str:
    return base58.encode_check(bytes([version]) + _bytes(20))


@pytest.mark.parametrize(
    ("network", "address", "kind"),
    [
        (REGTEST, segwit("bcrt", 0, 20), "p2wpkh"),
        (REGTEST, segwit("bcrt", 0, 32), "p2wsh"),
        (REGTEST, segwit("bcrt", 1, 32), "p2tr"),
        (REGTEST, base58_address(0x6F), "p2pkh"),
        (REGTEST, base58_address(0xC4), "p2sh"),
        (TESTNET, segwit("tb", 0, 20), "p2wpkh"),
        (TESTNET, segwit("tb", 1, 32), "p2tr"),
        (TESTNET, base58_address(0x6F), "p2pkh"),
        (SIGNET, segwit("tb", 0, 32), "p2wsh"),
        (SIGNET, base58_address(0xC4), "p2sh"),
        (MAINNET, segwit("bc", 0, 20), "p2wpkh"),
        (MAINNET, segwit("bc", 1, 32), "p2tr"),
        (MAINNET, base58_address(0x00), "p2pkh"),
        (MAINNET, base58_address(0x05), "p2sh"),
    ],
)
def test_valid_addresses(network, address, kind):
    valid = validate_address(address, network=network)
    assert valid.kind == kind
    assert valid.address == address


def test_known_vectors():
    # BIP 173 / BIP 350 examples
    assert (
        validate_address("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", network=MAINNET).kind
        == "p2wpkh"
    )
    assert validate_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", network=MAINNET).kind == "p2pkh"
    assert validate_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", network=MAINNET).kind == "p2sh"
    taproot = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"
    assert validate_address(taproot, network=MAINNET).kind == "p2tr"


def test_uppercase_bech32_is_normalized():
    address = segwit("bcrt", 0, 20)
    assert validate_address(address.upper(), network=REGTEST).address == address


@pytest.mark.parametrize(
    ("network", "address"),
    [
        (REGTEST, segwit("tb", 0, 20)),
        (REGTEST, segwit("bc", 1, 32)),
        (TESTNET, segwit("bcrt", 0, 20)),
        (TESTNET, segwit("bc", 0, 20)),
        (SIGNET, segwit("bc", 0, 32)),
        (MAINNET, segwit("tb", 0, 20)),
        (MAINNET, segwit("bcrt", 1, 32)),
        (MAINNET, base58_address(0x6F)),
        (MAINNET, base58_address(0xC4)),
        (TESTNET, base58_address(0x00)),
        (REGTEST, base58_address(0x05)),
    ],
)
def test_wrong_network(network, address):
    with pytest.raises(WrongNetwork) as raised:
        validate_address(address, network=network)
    assert raised.value.code == "wrong_network"


def _flip_last(address: str) -> str:
    last = address[-1]
    return address[:-1] + ("q" if last != "q" else "p")


@pytest.mark.parametrize(
    "address",
    [
        _flip_last(segwit("bcrt", 0, 20)),  # bech32 checksum
        _flip_last(segwit("bcrt", 1, 32)),  # bech32m checksum
        segwit("bcrt", 0, 20, Encoding.BECH32M),  # v0 must be bech32
        segwit("bcrt", 1, 32, Encoding.BECH32),  # v1 must be bech32m
        segwit("bcrt", 0, 25),  # v0 programs are 20 or 32 bytes
        segwit("bcrt", 1, 20),  # unknown v1 program length
        segwit("bcrt", 2, 32),  # future witness version: not spendable safely yet
        segwit("bcrt", 16, 40),
        "bcrt1" + "q" * 50,  # right prefix, garbage
        (lambda a: a[:10] + a[10:].upper())(segwit("bcrt", 0, 20)),  # mixed case
        base58_address(0x6F)[:-1] + "1",  # base58 checksum
        "mxVFsFW5N4mu1HPkxPttorvocvzeZ7KZyk0",  # 0 is not base58
        base58.encode_check(bytes([0x6F]) + _bytes(19)),  # short hash
        base58.encode_check(bytes([0x30]) + _bytes(20)),  # Litecoin's L prefix
        "hello world",
        "lnbcrt1u1pjq",  # an invoice, not an address
        "",
        "   ",
        "bcrt1" + "q" * 200,  # too long
        "x" * 5000,
    ],
)
def test_invalid_addresses(address):
    with pytest.raises(InvalidAddress) as raised:
        validate_address(address, network=REGTEST)
    assert raised.value.code == "invalid_address"


@pytest.mark.parametrize("value", [None, 12345, b"bcrt1q", ["bcrt1q"]])
def test_non_string_is_invalid(value):
    with pytest.raises(InvalidAddress):
        validate_address(value, network=REGTEST)
