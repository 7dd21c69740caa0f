"""The step's write (state/store.py `_overlapped`): a step's log lines are written while its document travels to
Redis, and always before any task the step starts; a write whose connection or script is gone is sent again the
usual way, and a fenced-out one still fails."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis

from tradeul_maint.base.errors import LockLostError
from tradeul_maint.redisio.keys import Keys
from tradeul_maint.run.processes import TaskProcesses
from tradeul_maint.state.document import COMPLETED, IN_PROGRESS, SessionStatus
from tradeul_maint.state.lock import RunLock
from tradeul_maint.state.store import StateStore

DAY = "2026-11-25"
QUIET = "[schedule]\nauto_recover = false\n"
EVENTS = ("task_starting", "task_completed")


def test_a_steps_log_lines_are_in_the_file_before_the_task_it_starts(project, monkeypatch):
    """When each task's start is asked for, maintenance.log has its start and the end of every task before it:
    the step's lines are not left to be written while the task runs (its own lines would come first)."""
    log, seen, start = project.log_dir / "maintenance.log", {}, TaskProcesses.start

    def starting(self, attempt, request):
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        seen[attempt.task] = [(e["event"], e.get("task")) for e in entries if e["event"] in EVENTS]
        return start(self, attempt, request)

    monkeypatch.setattr(TaskProcesses, "start", starting)
    (project.root / "noop.py").write_text("def run(ctx):\n    return None\n")
    names = [f"t{i}" for i in range(8)]
    project.write_config(QUIET + "".join(f'[[tasks]]\nname = "{n}"\npython = "noop:run"\n' for n in names))
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 0, result.output
    for i, name in enumerate(names):
        assert seen[name] == [e for n in names[:i] for e in (("task_starting", n), ("task_completed", n))] + \
            [("task_starting", name)], name


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url)
    lock = RunLock(client, Keys().lock, 60, "writer", "2026-11-25T22:00:00+00:00")
    lock.acquire()
    yield client, lock, StateStore(client, Keys(), 30, 60)
    client.close()


def _written(client) -> dict:
    return json.loads(client.get(f"maintenance:status:{DAY}"))["tasks"]


def test_a_write_whose_script_or_connection_is_gone_is_sent_again(store, r):
    client, lock, states = store
    status = SessionStatus(dt.date.fromisoformat(DAY), tasks={"a": IN_PROGRESS})
    said = []
    states.write(lock.token, status, meanwhile=lambda: said.append("first"))  # the script is not loaded yet
    assert _written(client) == {"a": IN_PROGRESS}
    r.script_flush()  # a restart, a failover: the server has no script cached
    status.tasks["a"] = COMPLETED
    states.write(lock.token, status, meanwhile=lambda: said.append("flushed"))
    assert _written(client) == {"a": COMPLETED}
    r.client_kill_filter(_type="normal", skipme=True)  # the writes' connection, kept between steps, is cut
    status.tasks["b"] = IN_PROGRESS
    states.write(lock.token, status, meanwhile=lambda: said.append("cut"))
    assert _written(client) == {"a": COMPLETED, "b": IN_PROGRESS}
    assert said == ["first", "flushed", "cut"]  # each step's lines once, whichever way its write went


def test_a_fenced_out_overlapped_write_fails_and_still_says_its_lines(store, r):
    client, lock, states = store
    status = SessionStatus(dt.date.fromisoformat(DAY), tasks={"a": IN_PROGRESS})
    states.write(lock.token, status)
    r.set(Keys().lock, "someone else")
    said = []
    with pytest.raises(LockLostError):
        states.write(lock.token, status, meanwhile=lambda: said.append("said"))
    assert said == ["said"]
