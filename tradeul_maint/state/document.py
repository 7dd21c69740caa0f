"""A session's maintenance status: one JSON document per session, rewritten whole on every step.

The document is the session's one source of truth at every moment: the runner rewrites it
(fenced on the run lock, see state/store.py) each time tasks end or start, before anything that
depends on them happens, so any client reads the latest state with one GET.

The fields `date`, `started_at`, `completed_at`, `duration_seconds`, `all_success` and
`tasks` (name -> pending | in_progress | completed | failed | skipped) are those of the
service being replaced, so documents it wrote read as done here and ours read there.
Everything else (attempts, run id, per-task details, the task list of the latest cycle, and
the session's last MAX_CYCLES cycles with what started each and every attempt it made) is
added alongside.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

from tradeul_maint.base import safejson

PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED = "pending", "in_progress", "completed", "failed", "skipped"
TASK_STATES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED)
UTC = dt.timezone.utc


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds") if moment else None


def parse_time(value: Any) -> dt.datetime | None:
    """Timestamps of either writer; a naive one (the old service's) is taken as UTC. One that does not parse, or
    lies outside SANE_YEARS (where adding a backoff or a wait to it, or an offset, would overflow), is None."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.year not in SANE_YEARS:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


SANE_YEARS = range(1900, 9000)


class Shape(ValueError):
    """A stored document that parses as JSON but is not shaped as this tool (or the service it replaces) writes it."""


_NUMBER, _TEXT, _TIME = "a number", "a string", "a timestamp"


def _field(doc: dict, key: str, kind: str, where: str = "") -> Any:
    """`doc[key]`, which may be absent or null, else must be of `kind`; Shape names the field otherwise."""
    value = doc.get(key)
    if value is None:
        return None
    ok = {_NUMBER: isinstance(value, (int, float)) and not isinstance(value, bool),
          _TEXT: isinstance(value, str),
          _TIME: isinstance(value, str) and parse_time(value) is not None,
          "an integer": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
          "true or false": isinstance(value, bool),
          "an object": isinstance(value, dict),
          "a list": isinstance(value, list)}[kind]
    if not ok:
        raise Shape(f"{where}{key} is {_json_kind(value)}, not {kind}")
    return value


def _fields(doc: Any, kinds: dict[str, str], where: str) -> dict[str, Any]:
    """The fields of a stored object that `kinds` names, each checked by `_field`; Shape when it is not an object."""
    if not isinstance(doc, dict):
        raise Shape(f"{where.rstrip('.')} is {_json_kind(doc)}, not an object")
    return {key: _field(doc, key, kind, where) for key, kind in kinds.items()}


def _json_kind(value: Any) -> str:
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else json.dumps(value)[:40]


_RECORD_KINDS = {"started_at": _TIME, "finished_at": _TIME, "duration_seconds": _NUMBER, "attempts": "an integer",
                 "error": _TEXT, "output": _TEXT, "result": "an object", "reason": _TEXT, "traceback": _TEXT,
                 "waiting_since": _TIME}


@dataclass
class TaskRecord:
    """Details of one task in one session, beyond its legacy status string."""

    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    attempts: int = 0
    error: str | None = None
    output: str | None = None
    result: dict | None = None
    reason: str | None = None
    traceback: str | None = None  # a failed Python task's, scrubbed and capped
    waiting_since: str | None = None  # waiting for data (wait_for) since its first probe that said "not yet"

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def parse(cls, doc: Any, where: str) -> TaskRecord:
        """A record as stored (fields it does not know are dropped); Shape when one it knows is mistyped."""
        values = _fields(doc, _RECORD_KINDS, where)
        values["attempts"] = values["attempts"] or 0
        return cls(**values)


INTERRUPTED_ATTEMPT = "interrupted"  # an attempt's outcome when a signal stopped it, or its runner died
RUNNER_STOPPED = "interrupted: its runner stopped"  # a cycle's, when its runner died before its end
WAITING_FOR_DATA = "waiting for data"  # a cycle's that only found its tasks' data missing (wait_for): no attempt
MAX_CYCLES = 20  # cycles a session's document keeps, the latest; older ones are dropped (the log has them all)
MAX_ATTEMPTS = 10  # attempts of one task a cycle keeps, the latest (a task with many retries)
ATTEMPT_ERROR_LIMIT = 300  # characters of an attempt's error kept in its cycle; the task's record has more
_ATTEMPT_KINDS = {"task": _TEXT, "attempt": "an integer", "started_at": _TIME, "finished_at": _TIME,
                  "outcome": _TEXT, "error": _TEXT}
_CYCLE_KINDS = {"started_at": _TIME, "finished_at": _TIME, "outcome": _TEXT, "done": "true or false",
                "trigger": _TEXT, "force": "true or false", "only": "a list", "user": _TEXT, "host": _TEXT,
                "run_id": _TEXT, "attempts": "a list"}


@dataclass
class AttemptRecord:
    """One attempt of one task in one cycle: when, and how it ended (None while it runs or when its runner died)."""

    task: str
    attempt: int  # its number within the cycle, 1 first
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None  # completed | failed | interrupted
    error: str | None = None  # capped at ATTEMPT_ERROR_LIMIT

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def parse(cls, doc: Any, where: str) -> AttemptRecord:
        values = _fields(doc, _ATTEMPT_KINDS, where)
        if values["task"] is None:
            raise Shape(f"{where}task is missing")
        values["attempt"] = values["attempt"] or 1
        return cls(**values)


@dataclass
class CycleRecord:
    """One cycle of a session: what started it (the audit trail), when, and every attempt it made.

    `trigger` is the command that started it: `cron` (`run` without --date), `run --date` or
    `recover`, with `force` and `only` (the `--task` names); `user` and `host` are who ran it.
    """

    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None  # completed | failed (the tasks it ran) | interrupted ...; None: running
    done: bool = False  # the session was done at its end: the first such cycle is when it became done
    trigger: str | None = None
    force: bool = False
    only: list[str] = field(default_factory=list)
    user: str | None = None
    host: str | None = None
    run_id: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The trigger as an operator would have typed it: `run --date --force`, `recover`, `cron`."""
        words = [self.trigger or "unknown"] + (["--force"] if self.force else [])
        return " ".join(words + (["--task " + ",".join(self.only)] if self.only else []))

    def add_attempt(self, attempt: AttemptRecord) -> None:
        """Append, keeping the task's latest MAX_ATTEMPTS in this cycle."""
        self.attempts.append(attempt)
        mine = [a for a in self.attempts if a.task == attempt.task]
        if len(mine) > MAX_ATTEMPTS:
            self.attempts.remove(mine[0])

    def to_json(self) -> dict:
        return {**self.head(), "attempts": [a.to_json() for a in self.attempts]}

    def head(self) -> dict:
        """What it records beside its attempts."""
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "attempts"}

    @classmethod
    def parse(cls, doc: Any, where: str) -> CycleRecord:
        values = _fields(doc, _CYCLE_KINDS, where)
        only = values["only"] or []
        if not all(isinstance(name, str) for name in only):
            raise Shape(f"{where}only holds something other than task names")
        values["only"] = list(only)
        values["force"], values["done"] = values["force"] is True, values["done"] is True
        values["attempts"] = [AttemptRecord.parse(a, f"{where}attempts.{i}.")
                              for i, a in enumerate(values["attempts"] or [])]
        return cls(**values)


def cap_error(error: str | None) -> str | None:
    if error is None or len(error) <= ATTEMPT_ERROR_LIMIT:
        return error
    return error[:ATTEMPT_ERROR_LIMIT - 3] + "..."


@dataclass
class SessionStatus:
    session: dt.date
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    duration_seconds: float | None = None
    all_success: bool = False
    tasks: dict[str, str] = field(default_factory=dict)
    details: dict[str, TaskRecord] = field(default_factory=dict)
    attempts: int = 0
    run_id: str | None = None
    runner: str | None = None
    interrupted: str | None = None
    # The latest cycle's configured tasks, name -> fingerprint (state/tasklist.py): what its host ran with.
    task_list: dict[str, str] | None = None
    corrupt: str | None = None  # why the stored document could not be read
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, kept on rewrite
    cycles: list[CycleRecord] = field(default_factory=list)  # oldest first, the latest MAX_CYCLES
    _texts: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see _Texts

    @property
    def done(self) -> bool:
        return self.all_success and self.completed_at is not None and self.corrupt is None

    @property
    def finished(self) -> bool:
        """The last cycle ran to its end (successfully or not)."""
        return self.completed_at is not None

    @property
    def failed(self) -> bool:
        return self.finished and not self.all_success

    @property
    def unfinished(self) -> bool:
        """A cycle started and never finished: it is running now, or its runner died or was stopped."""
        return self.started_at is not None and self.completed_at is None

    def completed(self, task: str) -> bool:
        return self.tasks.get(task) == COMPLETED

    def begin_cycle(self, cycle: CycleRecord) -> None:
        """Append a cycle, keeping the latest MAX_CYCLES."""
        self.cycles = [*self.cycles, cycle][-MAX_CYCLES:]

    @property
    def cycle(self) -> CycleRecord | None:
        """The latest cycle recorded, None for a document written without them (older versions, the old service)."""
        return self.cycles[-1] if self.cycles else None

    def to_json(self) -> str:
        """The whole document. Each step of a cycle rewrites it, and most of it (the records of tasks and
        attempts that did not change since the last step) is the text it was then, not encoded again."""
        doc = {k: v for k, v in self.extra.items() if k not in ("tasks", "task_list", "task_details", "cycles")}
        doc.update({
            "date": self.session.isoformat(),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "duration_seconds": self.duration_seconds,
            "all_success": self.all_success,
            "attempts": self.attempts,
            "run_id": self.run_id,
            "runner": self.runner,
            "interrupted": self.interrupted,
        })
        texts = _Texts(self._texts)
        parts = [_compact(doc)[:-1], ',"tasks":{', texts.states(self.tasks), "}"]
        if self.task_list is not None:
            parts += [',"task_list":', texts.task_list(self.task_list)]
        parts += [',"task_details":{', texts.joined("details", self.details.values(), list(self.details)),
                  '},"cycles":[']
        for i, cycle in enumerate(self.cycles):
            head = _compact(cycle.head())[:-1]
            parts += ["," if i else "", head, "," if head != "{" else "", '"attempts":[',
                      texts.joined(("cycle", i), cycle.attempts), "]}"]
        parts.append("]}")
        self._texts = texts.kept
        return "".join(parts)

    @classmethod
    def from_json(cls, session: dt.date, raw: str | bytes | None) -> SessionStatus | None:
        """None when there is no document; a `corrupt` status (never done) when it does not parse or is misshapen.

        Anything may have written the key (an older version, another tool, a hand), so every
        field is checked for the type this tool writes, not only the JSON syntax.
        """
        if raw is None:
            return None
        try:
            doc = safejson.loads(raw)
            if not isinstance(doc, dict):
                raise Shape(f"the document is {_json_kind(doc)}, not an object")
            _field(doc, "date", _TEXT)
            tasks = _field(doc, "tasks", "an object") or {}
            for name, state in tasks.items():
                if state not in TASK_STATES:
                    raise Shape(f"tasks.{name} is {_json_kind(state)}, not one of {', '.join(TASK_STATES)}")
            details = {name: TaskRecord.parse(rec, f"task_details.{name}.")
                       for name, rec in (_field(doc, "task_details", "an object") or {}).items()}
            task_list = _field(doc, "task_list", "an object")
            for name, fingerprint in (task_list or {}).items():
                if not isinstance(fingerprint, str):
                    raise Shape(f"task_list.{name} is {_json_kind(fingerprint)}, not a string")
            known = {"date", "started_at", "completed_at", "duration_seconds", "all_success", "tasks",
                     "task_details", "attempts", "run_id", "runner", "interrupted", "cycles", "task_list"}
            started_at = parse_time(_field(doc, "started_at", _TIME))
            attempts = _field(doc, "attempts", "an integer")  # 0 after cycles that only waited for data
            return cls(
                session=session,
                started_at=started_at,
                completed_at=parse_time(_field(doc, "completed_at", _TIME)),
                duration_seconds=_field(doc, "duration_seconds", _NUMBER),
                all_success=_field(doc, "all_success", "true or false") is True,
                tasks=dict(tasks),
                details=details,
                attempts=attempts if attempts is not None else (1 if started_at else 0),
                run_id=_field(doc, "run_id", _TEXT),
                runner=_field(doc, "runner", _TEXT),
                interrupted=_field(doc, "interrupted", _TEXT),
                task_list=task_list,
                extra={k: v for k, v in doc.items() if k not in known},
                cycles=[CycleRecord.parse(c, f"cycles.{i}.") for i, c in enumerate(_field(doc, "cycles", "a list")
                                                                                   or [])],
            )
        except (ValueError, TypeError, RecursionError) as exc:
            return cls(session=session, corrupt=str(exc) or type(exc).__name__)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Texts:
    """The JSON text of task and attempt records, kept from one document to the next.

    A 200-task cycle rewrites its document 200 times, and encoding it whole each time
    cost 0.7 ms at the end; most of its records have not changed since the last step. A
    record's text is reused while it is the same object, in the same place, holding equal
    values, all strings, numbers or None (one that holds a dict, which could change in place,
    is encoded each time). Equal, not identical: a number stored as 1 where it was 1.0 reads
    the same. The checks run over whole lists in C (`map` of `operator` functions): about
    0.1 us a record, where a Python loop over them took most of a step's encoding.
    """

    def __init__(self, previous: dict):
        self.previous = previous  # slot -> (records, keys, a copy of each one's values or None, texts)
        self.kept: dict = {}  # what the next document may reuse: this one's

    def joined(self, slot: object, records: list, keys: list | None = None) -> str:
        """The records' texts (`"key":{...}` with keys) joined by commas; `slot` names the list between documents."""
        records = list(records)  # a list changed in place (a cycle's attempts) must not change what is kept
        old, reused = self.previous.get(slot), 0
        if old is not None:
            same = list(map(operator.is_, old[0], records))  # as far as the shorter list goes
            if keys is not None:
                same = list(map(operator.and_, same, map(operator.eq, old[1], keys)))
            reused = same.index(False) if False in same else len(same)
        states, texts = (old[2][:reused], old[3][:reused]) if reused else ([], [])
        for i in compress(range(reused), map(operator.ne, states, map(_VALUES, records))):
            states[i], texts[i] = _encoded(records[i], keys[i] if keys is not None else None)
        for i in range(reused, len(records)):
            state, text = _encoded(records[i], keys[i] if keys is not None else None)
            states.append(state)
            texts.append(text)
        self.kept[slot] = (records, keys, states, texts)
        return ",".join(texts)

    def states(self, tasks: dict[str, str]) -> str:
        """The members of the `tasks` map (name to state), each encoded again only when its state changed."""
        names, states = list(tasks), list(tasks.values())
        old = self.previous.get("tasks")
        if old is not None and old[0] == names:
            texts = old[2][:]
            for i in compress(range(len(names)), map(operator.is_not, old[1], states)):
                texts[i] = f"{_compact(names[i])}:{_compact(states[i])}"
        else:
            texts = [f"{_compact(name)}:{_compact(state)}" for name, state in zip(names, states)]
        self.kept["tasks"] = (names, states, texts)
        return ",".join(texts)

    def task_list(self, fingerprints: dict[str, str]) -> str:
        """The task list (names to fingerprints of strings), encoded again only when it changes: once a cycle."""
        known = self.previous.get("task_list")
        if known is None or known[0] != fingerprints:
            known = (dict(fingerprints), _compact(fingerprints))
        self.kept["task_list"] = known
        return known[1]


def _encoded(record: TaskRecord | AttemptRecord, key: str | None) -> tuple[dict | None, str]:
    """A record's text, and a copy of its values to compare with next time (None: always encode it again)."""
    text = _compact(record.to_json())
    if key is not None:
        text = f"{_compact(key)}:{text}"
    values = record.__dict__
    return (dict(values) if all(type(v) in _PLAIN for v in values.values()) else None), text


_VALUES = operator.attrgetter("__dict__")
_PLAIN = (str, int, float, type(None))
