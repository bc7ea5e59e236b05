"""Bitcoin address validation for the configured network (embit's base58/bech32 primitives).

Accepted: base58 P2PKH/P2SH, bech32 witness v0 (20-byte P2WPKH, 32-byte P2WSH) and bech32m
witness v1 with a 32-byte program (P2TR). Refused as `invalid_address`: bad checksums, bech32
where bech32m is required and the reverse (BIP 350), mixed case, other lengths, and witness
versions 2-16 — they are valid strings, but outputs to them are anyone-can-spend until a soft
fork defines them, so paying one is almost surely a user's mistake. Refused as
`wrong_network`: a well-formed address of another network. Regtest accepts the test base58
prefixes, as Bitcoin Core does (they are shared by testnet, signet and regtest)."""

from __future__ import annotations

from dataclasses import dataclass

from embit import base58
from embit.bech32 import Encoding, bech32_decode, convertbits

from lightning.backends.base import Network
from onchain.errors import InvalidAddress, WrongNetwork

MAX_ADDRESS_LENGTH = 90  # BIP 173's limit on a whole bech32 string; base58 ones are shorter

BECH32_HRP = {
    Network.MAINNET: "bc",
    Network.TESTNET: "tb",
    Network.SIGNET: "tb",
    Network.REGTEST: "bcrt",
}
_MAINNET_BASE58 = {0x00: "p2pkh", 0x05: "p2sh"}
_TEST_BASE58 = {0x6F: "p2pkh", 0xC4: "p2sh"}
BASE58_VERSIONS = {
    Network.MAINNET: _MAINNET_BASE58,
    Network.TESTNET: _TEST_BASE58,
    Network.SIGNET: _TEST_BASE58,
    Network.REGTEST: _TEST_BASE58,
}


@dataclass(frozen=True, slots=True)
class ValidAddress:
    address: str  # normalized: bech32 lower-cased, base58 as given
    kind: str  # p2pkh, p2sh, p2wpkh, p2wsh, p2tr


def validate_address(address: object, *, network: Network) -> ValidAddress:
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddress("give a Bitcoin address")
    text = address.strip()
    if len(text) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress("this is too long to be a Bitcoin address")
    if text.lower().startswith(("bc1", "tb1", "bcrt1")):
        return _validate_segwit(text, network=network)
    return _validate_base58(text, network=network)


def _validate_segwit(text: str, *, network: Network) -> ValidAddress:
    encoding, hrp, data = bech32_decode(text)
    if encoding is None or not data:
        raise InvalidAddress(
            "this address is not valid: its checksum or characters are wrong",
            reason="bad_checksum",
        )
    if hrp != BECH32_HRP[network]:
        raise WrongNetwork(
            f"this address is for another network; this service uses {network}",
            network=str(network),
        )
    version = data[0]
    program = convertbits(data[1:], 5, 8, False)
    if program is None or not 2 <= len(program) <= 40 or version > 16:
        raise InvalidAddress("this address is not valid", reason="bad_program")
    if version == 0:
        if encoding != Encoding.BECH32:
            raise InvalidAddress(
                "this address is not valid: a version 0 address must use bech32, not bech32m",
                reason="wrong_encoding",
            )
        if len(program) == 20:
            return ValidAddress(text.lower(), "p2wpkh")
        if len(program) == 32:
            return ValidAddress(text.lower(), "p2wsh")
        raise InvalidAddress("this address is not valid", reason="bad_program")
    if encoding != Encoding.BECH32M:
        raise InvalidAddress(
            "this address is not valid: a version 1+ address must use bech32m, not bech32",
            reason="wrong_encoding",
        )
    if version == 1 and len(program) == 32:
        return ValidAddress(text.lower(), "p2tr")
    raise InvalidAddress(
        "this address uses a witness version that cannot be spent safely yet",
        reason="unsupported_witness_version",
    )


def _validate_base58(text: str, *, network: Network) -> ValidAddress:
    try:
        payload = base58.decode_check(text)
    except Exception as error:  # embit raises ValueError and friends for bad characters/sums
        raise InvalidAddress(
            "this is not a valid Bitcoin address", reason="not_an_address"
        ) from error
    if len(payload) != 21:
        raise InvalidAddress("this is not a valid Bitcoin address", reason="bad_length")
    version = payload[0]
    kind = BASE58_VERSIONS[network].get(version)
    if kind is not None:
        return ValidAddress(text, kind)
    if any(version in versions for versions in BASE58_VERSIONS.values()):
        raise WrongNetwork(
            f"this address is for another network; this service uses {network}",
            network=str(network),
        )
    raise InvalidAddress("this is not a valid Bitcoin address", reason="unknown_version")
