"""`api_answer.decode_json` gives exactly what `json.loads` gives: the same values of the same
types in the same order, or the same refusal, on edge cases, random numbers, the real Met
samples and the fake API's records (the stored hash and typed columns depend on it)."""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pytest
from harvester_support import MET_SAMPLES, samples_required

from met_harvester.api_answer import decode_json
from met_harvester.models import content_sha256
from met_harvester.testing import CollectionConfig, SyntheticCollection

EDGE_CASES = [
    '{"a":1e400}',
    '{"a":-1e400}',
    '{"a":1e-400}',
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    '{"a":nan}',
    '{"a":"\\ud800"}',
    '{"a":"\\uDFFF"}',
    '{"a":"\\ud800\\u0041"}',
    '{"\\ud800":1}',
    '{"a":"\\ud83d\\ude00"}',
    '{"a":"\\u0000"}',
    '{"a":"\u2028"}',
    '{"a":123456789012345678901234567890}',
    '{"a":-0}',
    '{"a":-0.0}',
    '{"a":1.0}',
    '{"a":1E2}',
    '{"a":1e+5}',
    '{"a":2.2250738585072014e-308}',
    '{"a":4.9e-324}',
    '{"a":1.7976931348623159e308}',
    '{"a":9007199254740993}',
    '{"a":9007199254740993.0}',
    '{"a":1' + "0" * 400 + "}",
    '{"a":' + "[" * 300 + "]" * 300 + "}",
    '{"a":' + "[" * 5000 + "]" * 5000 + "}",
    '{"a":1,"a":2}',
    '{"b":1,"a":{"d":2,"c":3}}',
    '{"a":"x\x01y"}',
    '{"a":1,}',
    "[1,]",
    '{"a":01}',
    '{"a":+1}',
    '{"a":.5}',
    '{"a":5.}',
    '{"a":1e}',
    '{"a":-}',
    '{"a":"\\x"}',
    '{"a":True}',
    "{'a':1}",
    '\ufeff{"a":1}',
    '{"a":1} x',
    '{"a":1}\x00',
    '{"a":1}\x0c',
    ' \t\r\n{"a":1}\n',
    "",
    "null",
    '"s"',
    "[]",
]


def outcome(decode: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", decode(text)
    except RecursionError:
        return "error", "RecursionError"
    except ValueError:
        return "error", "ValueError"


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (NaN equals NaN, -0.0 differs from 0.0), in equal order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_as_json_loads(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    expected = outcome(json.loads, text)
    got = outcome(lambda t: decode_json(raw, t), text)
    assert got[0] == expected[0], text[:80]
    assert same(got[1], expected[1]), text[:80]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases_decode_as_json_loads(text: str) -> None:
    assert_as_json_loads(text)


def test_random_numbers_decode_as_json_loads() -> None:
    rnd = random.Random(13)
    for _ in range(20_000):
        kind = rnd.random()
        if kind < 0.4:  # any double's repr, NaN and infinities included
            number = repr(struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0])
            number = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(number, number)
        elif kind < 0.7:  # long decimals with exponents (rounding)
            digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 25)))
            number = f"{rnd.randint(0, 9)}.{digits}e{rnd.randint(-330, 330)}"
        else:  # integers of any size
            number = str(rnd.randint(-(10 ** rnd.randint(1, 40)), 10 ** rnd.randint(1, 40)))
        assert_as_json_loads('{"v":' + number + "}")


@samples_required()
def test_real_met_records_decode_and_hash_as_json_loads() -> None:
    paths = sorted((MET_SAMPLES / "objects").glob("*.json"))
    assert paths
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert_as_json_loads(text)
        assert content_sha256(decode_json(text.encode(), text)) == content_sha256(json.loads(text))


def test_fake_api_records_decode_as_json_loads() -> None:
    collection = SyntheticCollection(CollectionConfig(n_objects=300, seed=3))
    for object_id in collection.object_ids:
        assert_as_json_loads(json.dumps(collection.record(object_id, "http://127.0.0.1:1/i")))
