"""The door skeleton (serve/edge/http.py) on a real FastAPI app over HTTP (Starlette's test
client): every route admitted the same way, answers and errors in the door's shape."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serve.edge.auth import ApiKeys
from serve.edge.errors import REASONS, ErrorKind, ServiceError, WireError, message, reason
from serve.edge.http import Caller, Door, Gate

ERRORS = {why: WireError(400, f"Door.{why.value}") for why in REASONS} | {
    ErrorKind.UNAUTHENTICATED: WireError(401, "Door.Key"), ErrorKind.RATE_LIMITED: WireError(429, "Door.Slow"),
    ErrorKind.BODY_TOO_LARGE: WireError(413, "Door.Big"), ErrorKind.NOT_FOUND: WireError(404, "Door.Gone")}
KEY = "door-test-key-0123456789"


class Limiter:
    """A FAKE rate limiter: refuses once `budget` requests were taken."""

    def __init__(self, budget: int):
        self.budget = budget

    async def take(self, key_id: str) -> int:
        self.budget -= 1
        return 0 if self.budget >= 0 else 7


class Service:
    api = "things"

    async def echo(self, caller: Caller, thing: str) -> dict | ServiceError:
        if thing == "missing":
            return ServiceError(ErrorKind.NOT_FOUND, "no such thing")
        return {"thing": thing, "body": caller.body, "key": caller.key_id}


def app(budget: int = 100) -> TestClient:
    door = Door(service=Service, errors=ERRORS, error_body=lambda e: {"code": ERRORS[reason(e)].code,
                                                                      "message": message(e)}, prefix="/door")

    @door.route("POST", "/things/{thing}", json_body=True, trailing_slash=True)
    async def echo(service: Service, caller: Caller, request: Request):
        return await service.echo(caller, request.path_params["thing"])

    api = FastAPI()
    api.include_router(door.router, prefix=door.prefix)
    api.state.gate = Gate(ApiKeys([KEY]), Limiter(budget), max_body_bytes=64)
    api.state.services = {door.name: Service()}
    return TestClient(api)


AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize("path", ["/door/things/a", "/door/things/a/"])
def test_an_admitted_route_gets_its_service_the_caller_and_the_body(path):
    answer = app().post(path, json={"x": 1}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["thing"] == "a" and answer.json()["body"] == {"x": 1}
    assert answer.json()["key"] and KEY not in answer.text


def test_a_service_error_is_answered_in_the_doors_shape():
    answer = app().post("/door/things/missing", json={}, headers=AUTH)
    assert (answer.status_code, answer.json()) == (404, {"code": "Door.Gone", "message": "no such thing"})


def test_admission_refuses_keys_rates_and_bodies_before_the_handler():
    assert app().post("/door/things/a", json={}).json()["code"] == "Door.Key"
    throttled = app(budget=0).post("/door/things/a", json={}, headers=AUTH)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "7"
    big = app().post("/door/things/a", content=b"[" + b"1," * 64 + b"1]", headers=AUTH)
    assert big.status_code == 413 and big.json()["code"] == "Door.Big"
    junk = app().post("/door/things/a", content=b"{nope", headers=AUTH)
    assert junk.status_code == 400 and junk.json()["code"] == "Door.malformed"


@pytest.mark.parametrize("body", [b"[" * 60, b'{"count": Infinity}', b'{"prompt": "\\ud800"}', b'{"n": 1e999}'])
def test_json_no_door_can_use_is_a_400_in_the_doors_shape_never_a_500(body):
    answer = app().post("/door/things/a", content=body, headers=AUTH)
    assert answer.status_code == 400 and answer.json()["code"] == "Door.malformed"


def test_a_content_length_that_is_not_a_number_is_a_400():
    answer = app().post("/door/things/a", content=b"{}", headers=AUTH | {"content-length": "2x"})
    assert answer.status_code == 400 and "Content-Length" in answer.json()["message"]
