"""The doors as the ingress lists them (serve/doors/registry.py): each has a complete error table,
a service of its own name, and a webhook body when it takes callbacks; unhandled errors take the
shape of the door whose prefix the path has."""

from __future__ import annotations

from cluster.spec.errors import ErrorCode, RenderError
from serve.doors.registry import DOORS, door_of, services, webhook_bodies
from serve.edge.errors import REASONS, ErrorKind, ServiceError
from tests.unit.serve.fakes import doors


def test_every_door_answers_every_failure_in_its_own_shape():
    for door in DOORS:
        assert set(door.errors) == set(REASONS), door.name
        for failure in (ServiceError(ErrorKind.NOT_FOUND, "gone"), RenderError(ErrorCode.OUT_OF_MEMORY, "too big"),
                        RenderError.invalid("size", "must be W*H")):
            answer = door.error_response(failure)
            assert answer.status_code == door.errors[failure.kind if isinstance(failure, ServiceError)
                                                     else failure.code].status
            assert b"must be W*H" in answer.body or b"gone" in answer.body or b"too big" in answer.body


def test_a_callers_error_is_a_4xx_and_ours_a_5xx_at_every_door():
    for door in DOORS:
        for code in ErrorCode:
            status = door.errors[code].status
            if code.callers:
                assert 400 <= status < 500, (door.name, code)
            elif code != ErrorCode.CANCELED:  # canceled by its caller: a 4xx, so no client retries it
                assert status >= 500, (door.name, code)


def test_doors_have_distinct_names_and_prefixes():
    assert len({door.name for door in DOORS}) == len({door.prefix for door in DOORS}) == len(DOORS)


def test_an_unhandled_error_takes_the_shape_of_the_door_of_its_path():
    assert door_of("/v1/images/generations").name == "openai"
    assert door_of("/flux/images").name == "acedata"
    assert door_of("/web/api/tasks").name == "web"
    assert door_of("/api/v1/tasks/x").name == door_of("/elsewhere").name == "dashscope"


def test_one_service_per_door_and_a_webhook_body_for_each_that_takes_callbacks(tmp_path):
    made = services(doors(tmp_path).tasks)
    assert set(made) == {door.name for door in DOORS}
    assert all(made[door.name].api == door.name and isinstance(made[door.name], door.service) for door in DOORS)
    assert set(webhook_bodies(made)) == {name for name, service in made.items() if service.takes_callbacks}
    assert set(webhook_bodies(made)) == {"dashscope", "acedata"}
