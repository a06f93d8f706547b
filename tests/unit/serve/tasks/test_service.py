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
