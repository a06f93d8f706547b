"""Strict request JSON (serve/edge/strict_json.py): what a parser accepts but no door can use is
refused at parse time, as the class it belongs to."""

from __future__ import annotations

import pytest

from serve.edge.strict_json import MAX_DEPTH, MalformedJson, parse


def test_ordinary_bodies_parse():
    assert parse(b'{"prompt": "caf\\u00e9 \\ud83d\\ude00", "n": 2, "guidance": 3.5, "x": [null, true]}') == {
        "prompt": "café 😀", "n": 2, "guidance": 3.5, "x": [None, True]}
    assert parse(b"") is None
    assert parse(b'{"seed": 9223372036854775807}')["seed"] == 2**63 - 1


@pytest.mark.parametrize(("body", "words"), [
    (b'{"count": NaN}', "NaN is not a JSON number"),
    (b'{"count": Infinity}', "Infinity is not a JSON number"),
    (b'{"count": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"guidance": 1e999}', "out of range"),
    (b'{"seed": 9223372036854775808}', "out of range"),
    (b'{"seed": ' + b"9" * 5000 + b"}", "out of range"),
    (b'{"prompt": "\\ud800"}', "lone UTF-16 surrogate"),
    (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
    (b"[" * 100_000, "nested deeper than"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper than"),
    (b'{"a": ' * 40 + b"1" + b"}" * 40, "nested deeper than"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"{nope", "not valid JSON"),
])
def test_bodies_no_door_can_use_are_malformed(body, words):
    with pytest.raises(MalformedJson, match=words):
        parse(body)


def test_the_deepest_allowed_body_parses():
    assert parse(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
