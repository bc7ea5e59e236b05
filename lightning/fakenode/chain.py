"""On-chain helpers of the simulated node: addresses valid for the network (embit), and fee
estimates. Pure functions, no database."""

from __future__ import annotations

import hashlib

from coincurve import PrivateKey
from embit.hashes import hash160
from embit.networks import NETWORKS
from embit.script import Script, address_to_scriptpubkey

from lightning.backends.base import Network

EMBIT_NETWORK = {
    Network.MAINNET: NETWORKS["main"],
    Network.TESTNET: NETWORKS["test"],
    Network.SIGNET: NETWORKS["signet"],
    Network.REGTEST: NETWORKS["regtest"],
}
DUST_LIMIT_SAT = 294  # P2WPKH dust at the default relay fee
# One P2WPKH input, P2WPKH/P2TR-sized outputs, a change output: a fair size for an estimate.
TX_OVERHEAD_VBYTES = 11
INPUT_VBYTES = 68
OUTPUT_VBYTES = 31


class InvalidAddress(ValueError):
    pass


def derive_address(*, node_private_key: str, index: int, network: Network) -> str:
    """The node's `index`-th P2WPKH address: a key derived from the node key and the index."""
    seed = hashlib.sha256(
        b"satledger-fakenode-address" + bytes.fromhex(node_private_key) + index.to_bytes(8, "big")
    ).digest()
    pubkey = PrivateKey(seed).public_key.format(compressed=True)
    script = Script(b"\x00\x14" + hash160(pubkey))
    return script.address(EMBIT_NETWORK[Network(network)])


def normalize_address(address: str, *, network: Network) -> str:
    """The address in canonical form (bech32 lowercase) if valid for `network`, else
    InvalidAddress. Re-encoding the decoded script for the network must give it back."""
    value = address.strip()
    if not value or len(value) > 100:
        raise InvalidAddress("not a bitcoin address")
    candidate = value.lower() if value.upper() == value or value.lower() == value else value
    try:
        script = address_to_scriptpubkey(candidate)
        encoded = script.address(EMBIT_NETWORK[Network(network)])
    except Exception:  # embit raises several kinds for malformed input
        raise InvalidAddress("not a valid bitcoin address") from None
    if encoded != candidate:
        raise InvalidAddress(f"not an address for {network}")
    return encoded


def sat_per_vbyte(target_conf: int) -> int:
    """A fixed fee market: sooner costs more."""
    if target_conf <= 1:
        return 25
    if target_conf <= 3:
        return 15
    if target_conf <= 6:
        return 10
    if target_conf <= 144:
        return 5
    return 2


def estimate_vbytes(output_count: int) -> int:
    return TX_OVERHEAD_VBYTES + INPUT_VBYTES + OUTPUT_VBYTES * (output_count + 1)
