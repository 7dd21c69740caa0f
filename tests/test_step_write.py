"""The step's write and the step gate (state/store.py `_overlapped`, run/gate.py): a step's log lines are written
while its document travels to Redis, and always before the gate opens; no task's own code runs before the gate
opens on its written step; a write whose connection or script is gone is sent again the usual way, and a
fenced-out one still fails."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import pytest
import redis

from tradeul_maint.base.errors import KeyTypeError, LockLostError
from tradeul_maint.redisio.keys import Keys
from tradeul_maint.run.processes import TaskProcesses
from tradeul_maint.state.document import COMPLETED, IN_PROGRESS, SessionStatus
from tradeul_maint.state.lock import RunLock
from tradeul_maint.state.store import StateStore

DAY = "2026-11-25"
QUIET = "[schedule]\nauto_recover = false\n"
EVENTS = ("task_starting", "task_completed")


def test_a_steps_log_lines_are_in_the_file_before_the_task_it_starts(project, monkeypatch):
    """When the gate opens for each task (its step written, run/gate.py), maintenance.log has its start and the end
    of every task before it: the step's lines are never left to be written while the task runs (its own lines
    would come first)."""
    log, opened, open_gate = project.log_dir / "maintenance.log", [], TaskProcesses.open_gate

    def opening(self):
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        opened.append([(e["event"], e.get("task")) for e in entries if e["event"] in EVENTS])
        return open_gate(self)

    monkeypatch.setattr(TaskProcesses, "open_gate", opening)
    (project.root / "noop.py").write_text("def run(ctx):\n    return None\n")
    names = [f"t{i}" for i in range(8)]
    project.write_config(QUIET + "".join(f'[[tasks]]\nname = "{n}"\npython = "noop:run"\n' for n in names))
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 0, result.output
    for i, name in enumerate(names):  # the i-th step starts the i-th task (max_parallel = 1)
        assert opened[i] == [e for n in names[:i] for e in (("task_starting", n), ("task_completed", n))] + \
            [("task_starting", name)], name


@pytest.fixture
def late_gate(monkeypatch) -> list[float]:
    """The gate opened 0.2 s after each step's write: when each opening was (monotonic), in order."""
    opened, open_gate = [], TaskProcesses.open_gate

    def late(self):
        time.sleep(0.2)
        opened.append(time.monotonic())
        return open_gate(self)

    monkeypatch.setattr(TaskProcesses, "open_gate", late)
    return opened


def test_no_task_runs_before_the_gate_opens_on_its_written_step(project, r, late_gate):
    """The runner asks for a start before it writes the step; the task's own code waits for the write. With the
    gate held 0.2 s after each write, every task starts after its gate opened and finds itself in progress."""
    (project.root / "early.py").write_text(
        "import json, time\n\n\ndef run(ctx):\n    began = time.monotonic()\n"
        "    doc = json.loads(ctx.redis.get(f'maintenance:status:{ctx.date}'))\n"
        "    ctx.report(began=began, state=doc['tasks'][ctx.task])\n")
    names = ["a", "b", "c"]
    project.write_config(QUIET + "".join(f'[[tasks]]\nname = "{n}"\npython = "early:run"\n' for n in names))
    assert project.cli("run", "--date", DAY).exit_code == 0
    details = json.loads(r.get(f"maintenance:status:{DAY}"))["task_details"]
    for i, name in enumerate(names):
        assert details[name]["result"]["state"] == IN_PROGRESS
        assert details[name]["result"]["began"] > late_gate[i], name


def test_no_command_runs_before_the_gate_opens(project, late_gate):
    """A command task's process waits at the gate before it execs its program."""
    stamps = project.root / "began.txt"
    stamp = f"import time; open({str(stamps)!r}, 'a').write(repr(time.monotonic()) + chr(10))"
    project.write_config(QUIET + "".join(f'[[tasks]]\nname = "{n}"\ncommand = [{sys.executable!r}, "-c", {stamp!r}]\n'
                                         for n in ("a", "b")))
    assert project.cli("run", "--date", DAY).exit_code == 0
    began = [float(line) for line in stamps.read_text().split()]
    assert len(began) == 2 and began[0] > late_gate[0] and began[1] > late_gate[1]


def test_a_task_cannot_open_the_gate_for_the_tasks_after_it(project, r, late_gate):
    """A Python task that finds the gate in its memory and moves its counter is killed by the page's protection
    (SIGSEGV): the task after it still waits for its own step's write."""
    (project.root / "tamper.py").write_text(
        "import gc, time\nfrom tradeul_maint.run.gate import StepGate\n\n\ndef run(ctx):\n    gc.unfreeze()\n"
        "    for gate in [o for o in gc.get_objects() if isinstance(o, StepGate)]:\n"
        "        gate._word.value = 1 << 30\n\n\ndef after(ctx):\n    ctx.report(began=time.monotonic())\n")
    project.write_config(QUIET + '[[tasks]]\nname = "tamper"\npython = "tamper:run"\n'
                                 '[[tasks]]\nname = "after"\npython = "tamper:after"\n')
    assert project.cli("run", "--date", DAY).exit_code == 1
    details = json.loads(r.get(f"maintenance:status:{DAY}"))["task_details"]
    assert "killed by signal 11" in details["tamper"]["error"], details["tamper"]  # SIGSEGV
    assert details["after"]["result"]["began"] > late_gate[1]


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


def test_an_overlapped_write_onto_a_key_of_another_type_writes_nothing_and_names_the_key(store, r):
    client, lock, states = store
    status = SessionStatus(dt.date.fromisoformat(DAY), tasks={"a": IN_PROGRESS})
    states.write(lock.token, status)  # the script is loaded: the next write takes the overlapped way
    key = f"maintenance:status:{DAY}"
    r.delete(key)
    r.hset(key, "someone", "else")  # another application, mid-cycle
    said = []
    with pytest.raises(KeyTypeError) as raised:
        states.write(lock.token, status, meanwhile=lambda: said.append("said"))
    assert key in str(raised.value) and said == ["said"]
    assert r.hgetall(key) == {"someone": "else"}
