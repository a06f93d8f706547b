"""What the task layer stores of a client's body (serve/tasks/service.py): bounded whatever was
sent, so one request cannot make a record that every read of it pays for."""

from __future__ import annotations

import json

from serve.tasks.service import CLIENT_BODY_BUDGET, _compact


def test_a_body_of_junk_is_stored_in_a_few_kib():
    junk = {"model": "flux-schnell", "input": {"prompt": "a cat"},
            "extra": [{"k": "x" * 900, "n": list(range(1000))} for _ in range(2000)],
            "deep": {"a": {"b": {"c": {"d": {"e": "too deep"}}}}}}
    assert len(json.dumps(junk)) > 5_000_000
    stored = _compact(junk)
    assert len(json.dumps(stored)) < 4 * CLIENT_BODY_BUDGET
    assert stored["model"] == "flux-schnell" and stored["input"] == {"prompt": "a cat"}  # what came first is kept
    assert any("omitted" in str(v) for v in stored["extra"])  # the cut is noted, not silent


def test_a_small_body_is_kept_as_sent_but_for_long_strings():
    body = {"model": "m", "input": {"prompt": "p", "image_url": "data:image/png;base64," + "A" * 5000}}
    assert _compact(body) == {"model": "m", "input": {"prompt": "p", "image_url": "<5022 characters omitted>"}}


def test_keys_and_long_numbers_are_charged_as_stored():
    """Keys and numbers cost their bytes: before, 64-character keys and 19-digit numbers cost one
    unit each, and such a body was stored at over 500 KiB."""
    keys = {f"{i:064d}": 10**18 + i for i in range(20_000)}
    numbers = [[1.2345678901234567e300] * 50 for _ in range(2000)]
    for body in (keys, {"list": numbers}, {"é" * 64: "€" * 1000 for _ in range(1)} | keys):
        stored = json.dumps(_compact(body), ensure_ascii=False).encode()
        assert len(stored) < CLIENT_BODY_BUDGET + 8 * 1024, len(stored)  # the budget, one value past it, notes
