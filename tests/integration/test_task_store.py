"""Both task-store backends against real servers: a SQLite file and a Redis server."""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace

import pytest

from serve.tasks.store import base as store_base
from serve.tasks.store.record import TaskStatus
from serve.tasks.store.redis import RedisTaskStore
from serve.tasks.store.sqlite import SQLiteTaskStore
from tests.factories import resolved_request, task_record
from tests.servers import redis_server


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture
def loop():
    # One event loop per test: the Redis client binds to the loop it first ran on.
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path, loop):
    if request.param == "sqlite":
        s = SQLiteTaskStore(tmp_path / "tasks.sqlite")
    else:
        s = RedisTaskStore(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:8]}")
    yield s
    loop.run_until_complete(s.close())


@pytest.fixture
def run(loop):
    """Run a coroutine to completion on the test's loop."""
    return loop.run_until_complete


record = task_record




def test_create_get_and_unknown(store, run):
    r = record(request=resolved_request(prompt="a cat", seed=1))
    run(store.create(r))
    got = run(store.get(r.task_id))
    assert got == r
    assert run(store.get("nope")) is None


def test_cancel_only_from_pending(store, run):
    r = record()
    run(store.create(r))
    running = run(store.transition(r.task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING))
    assert running.status == TaskStatus.RUNNING and running.version == 1
    assert run(store.transition(r.task_id, {TaskStatus.PENDING}, status=TaskStatus.CANCELED)) is None
    assert run(store.get(r.task_id)).status == TaskStatus.RUNNING


def test_concurrent_transitions_have_one_winner(store, run):
    r = record()
    run(store.create(r))

    async def race():
        # In one event loop the stores interleave at every await: a real race on version.
        return await asyncio.gather(*[
            store.transition(r.task_id, {TaskStatus.PENDING}, status=s)
            for s in [TaskStatus.RUNNING, TaskStatus.CANCELED] * 5])

    winners = [x for x in run(race()) if x is not None]
    assert len(winners) == 1
    assert run(store.get(r.task_id)).status == winners[0].status


def test_list_filters_and_pages(store, run):
    base = time.time()
    for i in range(7):
        run(store.create(record(submit_time=base + i, model="flux-schnell" if i % 2 else "stable-diffusion-xl")))
    run(store.create(record(key_id="someone-else")))
    page, total = run(store.list(key_id="k1", page_no=1, page_size=3))
    assert total == 7 and [r.submit_time for r in page] == [base + 6, base + 5, base + 4]
    page3, _ = run(store.list(key_id="k1", page_no=3, page_size=3))
    assert len(page3) == 1
    flux, total = run(store.list(key_id="k1", model="flux-schnell"))
    assert total == 3 and all(r.model == "flux-schnell" for r in flux)
    recent, total = run(store.list(key_id="k1", start=base + 5))
    assert total == 2


def test_list_totals_follow_transitions_expiry_and_purge(store, run):
    now = time.time()
    live = [record(model="flux-schnell") for _ in range(4)] + [record(model="stable-diffusion-xl")]
    gone = record(expires_at=now - 1)  # expired, not purged yet
    for r in [*live, gone, record(key_id="someone-else")]:
        run(store.create(r))
    run(store.transition(live[0].task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING))
    run(store.transition(live[1].task_id, {TaskStatus.PENDING}, status=TaskStatus.CANCELED))

    def total(**filters) -> int:
        return run(store.list(key_id="k1", **filters))[1]

    # The record past its retention: SQLite leaves it out at once; Redis' totals count it until
    # the purge (a minute at most), its pages never show it.
    late = 1 if isinstance(store, RedisTaskStore) else 0
    assert (total(), total(status="PENDING"), total(model="flux-schnell", status="PENDING"),
            total(status="CANCELED"), total(model="stable-diffusion-xl")) == (5 + late, 3 + late, 2 + late, 1, 1)
    assert total(start=now - 60) == 5 + late  # a time range counts its entries: the same answer
    assert gone.task_id not in {r.task_id for r in run(store.list(key_id="k1", page_size=50))[0]}
    run(store.purge_expired(time.time()))
    assert total() == 5 and run(store.get(gone.task_id)) is None
    run(store.delete([live[4].task_id]))
    assert (total(), total(model="stable-diffusion-xl")) == (4, 0)


def test_what_a_key_keeps_is_counted_in_its_index_and_falls_as_records_go(store, run):
    """The count behind each key's share of the store (serve.max_kept_per_key): every record of
    the key, whatever its model or status, none of another key's; down as records are purged."""
    now = time.time()
    mine = [record(model="flux-schnell"), record(model="stable-diffusion-xl"), record(expires_at=now - 1)]
    for r in [*mine, record(key_id="someone-else")]:
        run(store.create(r))
    run(store.transition(mine[0].task_id, {TaskStatus.PENDING}, status=TaskStatus.SUCCEEDED))
    assert run(store.kept("k1")) == 3 and run(store.kept("someone-else")) == 1 and run(store.kept("nobody")) == 0
    run(store.purge_expired(time.time()))
    assert run(store.kept("k1")) == 2


def test_sqlite_counts_a_file_made_before_its_counts(tmp_path, run):
    """A file of the version before `task_counts`: its records are counted on open."""
    path = tmp_path / "old.sqlite"
    first = SQLiteTaskStore(path)
    for status in (TaskStatus.PENDING, TaskStatus.PENDING, TaskStatus.SUCCEEDED):
        run(first.create(record(status=status)))
    for name in ("count_inserted", "count_deleted", "count_moved"):
        first._db.execute(f"DROP TRIGGER {name}")
    first._db.execute("DROP TABLE task_counts")
    run(first.close())
    reopened = SQLiteTaskStore(path)
    assert run(reopened.list(key_id="k1"))[1] == 3 and run(reopened.list(key_id="k1", status="PENDING"))[1] == 2
    run(reopened.create(record()))
    assert run(reopened.list(key_id="k1"))[1] == 4
    run(reopened.close())


def test_expired_lease_is_claimed_once(store, run):
    now = time.time()
    stale = record(owner="dead", lease_until=now - 1, status=TaskStatus.RUNNING)
    live = record(owner="alive", lease_until=now + 60)
    done = record(owner="dead", lease_until=now - 1, status=TaskStatus.SUCCEEDED)
    for r in (stale, live, done):
        run(store.create(r))
    claimed = run(store.claim_expired("me", now, now + 30))
    assert [r.task_id for r in claimed] == [stale.task_id]
    assert run(store.get(stale.task_id)).owner == "me"
    assert run(store.claim_expired("other", now, now + 30)) == []


def test_renew_extends_only_own_leases(store, run):
    now = time.time()
    mine, theirs = record(owner="me", lease_until=now), record(owner="them", lease_until=now)
    canceled = record(owner="me", lease_until=now, status=TaskStatus.CANCELED)  # by another ingress
    for r in (mine, theirs, canceled):
        run(store.create(r))
    ended = run(store.renew("me", [mine.task_id, theirs.task_id, canceled.task_id], now + 100))
    assert ended == [canceled.task_id]  # its dispatcher is told, to stop the render
    assert run(store.get(mine.task_id)).lease_until == now + 100
    assert run(store.get(theirs.task_id)).lease_until == now


def test_queue_position_counts_earlier_pending_tasks_of_the_model(store, run):
    base = time.time()
    queue = [record(submit_time=base + i) for i in range(4)]
    others = [record(submit_time=base - 5, model="stable-diffusion-xl"),  # another model's queue
              record(submit_time=base - 5, status=TaskStatus.RUNNING)]  # already started
    for r in queue + others:
        run(store.create(r))
    assert [run(store.pending_ahead(r)) for r in queue] == [0, 1, 2, 3]
    run(store.transition(queue[0].task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING))
    run(store.transition(queue[2].task_id, {TaskStatus.PENDING}, status=TaskStatus.CANCELED))
    assert run(store.pending_ahead(queue[3])) == 1  # only queue[1] is still ahead


def test_fingerprints_are_remembered_until_they_expire(store, run):
    run(store.remember("k1:body:abc", "task-1", time.time() + 60))
    run(store.remember("k1:body:abc", "task-2", time.time() + 60))  # the newer task replaces it
    run(store.remember("k1:body:old", "task-0", time.time() - 1))
    assert run(store.recall("k1:body:abc")) == "task-2"
    assert run(store.recall("k1:body:old")) is None and run(store.recall("k1:body:none")) is None


def test_records_expire_after_retention(store, run, monkeypatch):
    short = record(expires_at=time.time() + 60)
    run(store.create(short))
    assert run(store.get(short.task_id)) is not None
    assert short.task_id not in run(store.purge_expired(time.time()))
    later = short.expires_at + 1  # the store's clock past the retention (no sleep: the store reads time.time())
    monkeypatch.setattr(store_base, "time", SimpleNamespace(time=lambda: later))
    assert run(store.get(short.task_id)) is None
    assert short.task_id in run(store.purge_expired(later))


def test_webhooks_come_due_from_the_index(store, run):
    from serve.tasks.store.record import DeliveryState, WebhookDelivery

    now = time.time()
    due = record(status=TaskStatus.SUCCEEDED, webhook=WebhookDelivery(url="http://x", next_attempt_at=now - 1))
    later = record(status=TaskStatus.FAILED, webhook=WebhookDelivery(url="http://x", next_attempt_at=now + 60))
    unfinished = record(webhook=WebhookDelivery(url="http://x", next_attempt_at=now - 1))  # not ended: not due
    for r in (due, later, unfinished):
        run(store.create(r))
    assert [r.task_id for r in run(store.due_webhooks(now))] == [due.task_id]
    run(store.transition(unfinished.task_id, {TaskStatus.PENDING}, status=TaskStatus.CANCELED))
    assert {r.task_id for r in run(store.due_webhooks(now))} == {due.task_id, unfinished.task_id}
    run(store.update(due.task_id, lambda r: r.model_copy(update={"webhook": r.webhook.model_copy(
        update={"state": DeliveryState.DELIVERED})})))
    assert [r.task_id for r in run(store.due_webhooks(now))] == [unfinished.task_id]


def test_status_and_model_filters_follow_transitions_and_the_purge(store, run):
    base = time.time()
    tasks = [record(submit_time=base + i, model="flux-dev" if i < 2 else "flux-schnell") for i in range(4)]
    for r in tasks:
        run(store.create(r))
    run(store.transition(tasks[0].task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING))
    run(store.transition(tasks[3].task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING))
    running, total = run(store.list(key_id="k1", status="RUNNING"))
    assert total == 2 and [r.task_id for r in running] == [tasks[3].task_id, tasks[0].task_id]
    dev_pending, total = run(store.list(key_id="k1", status="PENDING", model="flux-dev"))
    assert total == 1 and [r.task_id for r in dev_pending] == [tasks[1].task_id]
    assert run(store.pending_ahead(tasks[2])) == 0  # flux-schnell's queue: tasks[3] started
    short = record(submit_time=base + 9, expires_at=time.time() + 60)
    run(store.create(short))
    assert run(store.purge_expired(short.expires_at + 1)) == [short.task_id]  # as a purge a minute later would
    assert run(store.list(key_id="k1"))[1] == 4  # gone from the key's index too


def test_a_store_file_of_an_older_version_gets_its_indexes(tmp_path, run):
    import sqlite3

    old = record(submit_time=time.time() - 5)
    with sqlite3.connect(tmp_path / "old.sqlite") as db:  # the schema before the index columns
        db.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, version INTEGER NOT NULL, "
                   "expires_at REAL NOT NULL, body TEXT NOT NULL)")
        db.execute("INSERT INTO tasks VALUES (?, ?, ?, ?)", (old.task_id, 0, old.expires_at, old.model_dump_json()))
    store = SQLiteTaskStore(tmp_path / "old.sqlite")
    try:
        listed, total = run(store.list(key_id="k1"))
        assert total == 1 and listed[0].task_id == old.task_id
        assert run(store.pending_ahead(record())) == 1
    finally:
        run(store.close())


def test_a_full_redis_refuses_new_tasks_and_still_finishes_those_it_has(run, monkeypatch):
    """Redis with maxmemory under noeviction refuses every write past it, a running task's next
    state too: new tasks are refused from 90% of the bound on, and those in still finish."""
    import redis

    monkeypatch.setattr(store_base, "FULLNESS_EVERY_S", 0.0)  # asked at every create: the bound is met exactly
    with redis_server() as url:
        admin = redis.Redis.from_url(url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 2 * 2**20)  # 2 MiB of room
        full = RedisTaskStore(url)
        created = []
        with pytest.raises(store_base.StoreFull, match="the task store is 9[0-9]% full"):
            for _ in range(100_000):
                r = record(request=resolved_request(prompt="x" * 2000))
                run(full.create(r))
                created.append(r)
        assert len(created) > 100  # it filled up, and refused only then
        assert run(full.fullness()) >= store_base.NEW_TASKS_UP_TO
        for r in created[:50]:  # the tasks in can still change state
            assert run(full.transition(r.task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING)) is not None
        run(full.close())


def test_a_write_past_redis_maxmemory_is_a_full_store_too(run, monkeypatch):
    import redis

    monkeypatch.setattr(store_base, "FULLNESS_EVERY_S", 1e9)  # the first answer stays: only Redis itself refuses
    with redis_server() as url:
        admin = redis.Redis.from_url(url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 2**20)
        full = RedisTaskStore(url)
        with pytest.raises(store_base.StoreFull, match="at its maxmemory"):
            for _ in range(100_000):
                run(full.create(record(request=resolved_request(prompt="x" * 2000))))
        run(full.close())
