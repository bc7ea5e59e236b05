"""BOLT 11's own test vectors (11-payment-encoding.md, "Examples"): the service's decoder
reads every valid one as the spec says, agrees with the bolt11 package field by field, and
refuses every invalid one."""

import hashlib

import bolt11 as bolt11_package
import pytest

from lightning.backends.base import Network
from lightning.errors import InvalidInvoice
from lightning.invoices import _network_and_amount, _parse_data_part, decode_bolt11

SPEC_PAYMENT_HASH = "0001020304050607080900010203040506070809000102030405060708090102"
SPEC_NODE_ID = "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad"
CAKE = (
    "One piece of chocolate cake, one icecream cone, one pickle, one slice of swiss cheese, "
    "one slice of salami, one lollypop, one piece of cherry pie, one sausage, one cupcake, "
    "and one slice of watermelon"
)
CAKE_HASH = hashlib.sha256(CAKE.encode()).hexdigest()

# (invoice, network, amount_msat, description, description_hash)
VALID = [
    (
        "lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqscc6gd6ql3jrc5yzme8v4ntcewwz5cnw92tz0pc8qcuufvq7khhr8wpald05e92xw006sq94mg8v2ndf4sefvf9sygkshp5zfem29trqq2yxxz7",
        Network.MAINNET,
        2_000_000_000,
        "",
        CAKE_HASH,
    ),
    (
        "lntb20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfpp3x9et2e20v6pu37c5d9vax37wxq72un98kmzzhznpurw9sgl2v0nklu2g4d0keph5t7tj9tcqd8rexnd07ux4uv2cjvcqwaxgj7v4uwn5wmypjd5n69z2xm3xgksg28nwht7f6zspwp3f9t",
        Network.TESTNET,
        2_000_000_000,
        "",
        CAKE_HASH,
    ),
    (
        "lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfpp3qjmp7lwpagxun9pygexvgpjdc4jdj85fr9yq20q82gphp2nflc7jtzrcazrra7wwgzxqc8u7754cdlpfrmccae92qgzqvzq2ps8pqqqqqqpqqqqq9qqqvpeuqafqxu92d8lr6fvg0r5gv0heeeqgcrqlnm6jhphu9y00rrhy4grqszsvpcgpy9qqqqqqgqqqqq7qqzqj9n4evl6mr5aj9f58zp6fyjzup6ywn3x6sk8akg5v4tgn2q8g4fhx05wf6juaxu9760yp46454gpg5mtzgerlzezqcqvjnhjh8z3g2qqdhhwkj",
        Network.MAINNET,
        2_000_000_000,
        "",
        CAKE_HASH,
    ),
    (
        "lnbc20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfppj3a24vwu6r8ejrss3axul8rxldph2q7z9kmrgvr7xlaqm47apw3d48zm203kzcq357a4ls9al2ea73r8jcceyjtya6fu5wzzpe50zrge6ulk4nvjcpxlekvmxl6qcs9j3tz0469gq5g658y",
        Network.MAINNET,
        2_000_000_000,
        "",
        CAKE_HASH,
    ),
    (
        "lnbc20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfppqw508d6qejxtdg4y5r3zarvary0c5xw7kepvrhrm9s57hejg0p662ur5j5cr03890fa7k2pypgttmh4897d3raaq85a293e9jpuqwl0rnfuwzam7yr8e690nd2ypcq9hlkdwdvycqa0qza8",
        Network.MAINNET,
        2_000_000_000,
        "",
        CAKE_HASH,
    ),
    (
        "lnbc20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfp4qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q28j0v3rwgy9pvjnd48ee2pl8xrpxysd5g44td63g6xcjcu003j3qe8878hluqlvl3km8rm92f5stamd3jw763n3hck0ct7p8wwj463cql26ava",
        Network.MAINNET,
        2_000_000_000,
        "",
        CAKE_HASH,
    ),
    (
        "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqpqsq67gye39hfg3zd8rgc80k32tvy9xk2xunwm5lzexnvpx6fd77en8qaq424dxgt56cag2dpt359k3ssyhetktkpqh24jqnjyw6uqd08sgptq44qu",
        Network.MAINNET,
        2_500_000_000,
        "coffee beans",
        None,
    ),
    (
        "LNBC25M1PVJLUEZPP5QQQSYQCYQ5RQWZQFQQQSYQCYQ5RQWZQFQQQSYQCYQ5RQWZQFQYPQDQ5VDHKVEN9V5SXYETPDEESSP5ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYGS9Q5SQQQQQQQQQQQQQQQPQSQ67GYE39HFG3ZD8RGC80K32TVY9XK2XUNWM5LZEXNVPX6FD77EN8QAQ424DXGT56CAG2DPT359K3SSYHETKTKPQH24JQNJYW6UQD08SGPTQ44QU",
        Network.MAINNET,
        2_500_000_000,
        "coffee beans",
        None,
    ),
]

BLOCKSTREAM = "lnbc9678785340p1pwmna7lpp5gc3xfm08u9qy06djf8dfflhugl6p7lgza6dsjxq454gxhj9t7a0sd8dgfkx7cmtwd68yetpd5s9xar0wfjn5gpc8qhrsdfq24f5ggrxdaezqsnvda3kkum5wfjkzmfqf3jkgem9wgsyuctwdus9xgrcyqcjcgpzgfskx6eqf9hzqnteypzxz7fzypfhg6trddjhygrcyqezcgpzfysywmm5ypxxjemgw3hxjmn8yptk7untd9hxwg3q2d6xjcmtv4ezq7pqxgsxzmnyyqcjqmt0wfjjq6t5v4khxxqyjw5qcqp2rzjq0gxwkzc8w6323m55m4jyxcjwmy7stt9hwkwe2qxmy8zpsgg7jcuwz87fcqqeuqqqyqqqqlgqqqqn3qq9qn07ytgrxxzad9hc4xt3mawjjt8znfv8xzscs7007v9gh9j569lencxa8xeujzkxs0uamak9aln6ez02uunw6rd2ht2sqe4hz8thcdagpleym0j"

INVALID = {
    "bad checksum": "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrnt",
    "no separator": "pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrny",
    "mixed case": "LNBC2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrny",
    "signature not recoverable": "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpuaxtrnwngzn3kdzw5hydlzf03qdgm2hdq27cqv3agm2awhz5se903vruatfhq77w3ls4evs3ch9zw97j25emudupq63nyw24cg27h2rspk28uwq",
    "too short": "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6na6hlh",
    "invalid multiplier": "lnbc2500x1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpujr6jxr9gq9pv6g46y7d20jfkegkg4gljz2ea2a3m9lmvvr95tq2s0kvu70u3axgelz3kyvtp2ywwt0y8hkx2869zq5dll9nelr83zzqqpgl2zg",
    "sub-millisatoshi": "lnbc2500000001p1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu7hqtk93pkf7sw55rdv4k9z2vj050rxdr6za9ekfs3nlt5lr89jqpdmxsmlj9urqumg0h9wzpqecw7th56tdms40p2ny9q4ddvjsedzcplva53s",
}


def _data_part(invoice: str):
    value = invoice.lower()
    separator = value.rfind("1")
    return _parse_data_part(value, hrp=value[:separator], words_text=value[separator + 1 :])


@pytest.mark.parametrize(("invoice", "network", "amount", "description", "description_hash"), VALID)
def test_spec_valid_invoices_are_read_as_the_spec_says(
    invoice, network, amount, description, description_hash
):
    parsed = _data_part(invoice)
    assert parsed.payment_hash == SPEC_PAYMENT_HASH
    assert parsed.payee == SPEC_NODE_ID
    assert parsed.description == description
    assert parsed.description_hash == description_hash
    assert parsed.timestamp == 1496314658
    assert parsed.expiry_s == 3600  # the default
    if parsed.payment_secret is None:
        # The older examples predate payment secrets, which every node now requires.
        with pytest.raises(InvalidInvoice, match="payment secret"):
            decode_bolt11(invoice, network=network)
        return
    decoded = decode_bolt11(invoice, network=network)
    assert parsed.payment_secret == "11" * 32
    assert decoded.amount_msat == amount
    assert (decoded.payment_hash, decoded.payee, decoded.description) == (
        SPEC_PAYMENT_HASH,
        SPEC_NODE_ID,
        description,
    )
    oracle = bolt11_package.decode(invoice.lower())
    assert (oracle.payment_hash, oracle.payee, oracle.date, oracle.amount_msat) == (
        decoded.payment_hash,
        decoded.payee,
        int(decoded.created_at.timestamp()),
        decoded.amount_msat,
    )


def test_spec_pico_amount_expiry_and_cltv():
    parsed = _data_part(BLOCKSTREAM)
    assert parsed.payment_hash == "462264ede7e14047e9b249da94fefc47f41f7d02ee9b091815a5506bc8abf75f"
    assert parsed.timestamp == 1572468703
    assert parsed.expiry_s == 604_800
    assert parsed.min_final_cltv_expiry == 10
    assert parsed.description.startswith("Blockstream Store: 88.85 USD for Blockstream Ledger")
    assert _network_and_amount("lnbc9678785340p", network=Network.MAINNET) == 967_878_534


@pytest.mark.parametrize("name", sorted(INVALID))
def test_spec_invalid_invoices_are_refused(name):
    with pytest.raises(InvalidInvoice):
        decode_bolt11(INVALID[name], network=Network.MAINNET)
