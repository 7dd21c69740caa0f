"""A session's maintenance status: one JSON document per session, kept current task by task.

While a cycle runs, a transition does not rewrite the document: the task's state is
overwritten in place (each state sits in a fixed-width slot, see `layout`) and its details
go to a hash of their own, folded into the document at its next whole write, and by
`apply_transitions` for readers in between (store.py).

The fields `date`, `started_at`, `completed_at`, `duration_seconds`, `all_success` and
`tasks` (name -> pending | in_progress | completed | failed | skipped) are those of the
service being replaced, so documents it wrote read as done here and ours read there.
Everything else (attempts, run id, per-task details) is added alongside.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from tradeul_maint import safejson

PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED = "pending", "in_progress", "completed", "failed", "skipped"
TASK_STATES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED)
STATE_SLOT = len('"in_progress"')  # characters each task's state takes in the document, blanks included
UTC = dt.timezone.utc


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds") if moment else None


def parse_time(value: Any) -> dt.datetime | None:
    """Timestamps of either writer; a naive one (the old service's) is taken as UTC."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
          "an object": isinstance(value, dict)}[kind]
    if not ok:
        raise Shape(f"{where}{key} is {_json_kind(value)}, not {kind}")
    return value


def _json_kind(value: Any) -> str:
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else json.dumps(value)[:40]


_RECORD_KINDS = {"started_at": _TIME, "finished_at": _TIME, "duration_seconds": _NUMBER, "attempts": "an integer",
                 "error": _TEXT, "output": _TEXT, "result": "an object", "reason": _TEXT, "traceback": _TEXT}


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

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def parse(cls, doc: Any, where: str) -> TaskRecord:
        """A record as stored (fields it does not know are dropped); Shape when one it knows is mistyped."""
        if not isinstance(doc, dict):
            raise Shape(f"{where.rstrip('.')} is {_json_kind(doc)}, not an object")
        values = {key: _field(doc, key, kind, where) for key, kind in _RECORD_KINDS.items()}
        values["attempts"] = values["attempts"] or 0
        return cls(**values)


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
    corrupt: str | None = None  # why the stored document could not be read
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, kept on rewrite

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

    def to_json(self) -> str:
        return self.layout()[0]

    def layout(self) -> tuple[str, dict[str, tuple[int, int]]]:
        """The document, and where each task's state sits in it: task -> (offset, width).

        Each state is written quoted and padded with blanks to STATE_SLOT characters (JSON
        allows blanks between tokens), so that a transition can overwrite it in place and
        the `tasks` map stays exact however many tasks the document holds. The text is
        ASCII (json.dumps escapes the rest), so the offsets count bytes too.
        """
        head = dict(self.extra)
        head.update({
            "date": self.session.isoformat(),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "duration_seconds": self.duration_seconds,
            "all_success": self.all_success,
        })
        tail = {
            "task_details": {name: rec.to_json() for name, rec in self.details.items()},
            "attempts": self.attempts,
            "run_id": self.run_id,
            "runner": self.runner,
            "interrupted": self.interrupted,
        }
        parts = [_compact(head)[:-1], ',"tasks":{']
        size = len(parts[0]) + len(parts[1])
        slots: dict[str, tuple[int, int]] = {}
        for i, (name, state) in enumerate(self.tasks.items()):
            key = ("," if i else "") + json.dumps(name) + ":"
            value = json.dumps(state)
            width = max(STATE_SLOT, len(value))
            slots[name] = (size + len(key), width)
            parts += [key, value.ljust(width)]
            size += len(key) + width
        parts += ["},", _compact(tail)[1:]]
        return "".join(parts), slots

    def state_slot(self, task: str, width: int) -> str | None:
        """The task's state as its slot holds it, or None when it does not fit the slot."""
        value = json.dumps(self.tasks[task])
        return value.ljust(width) if len(value) <= width else None

    def transition_json(self, task: str) -> str:
        """One task's state and details, as the transitions hash holds them."""
        record = self.details.get(task)
        return json.dumps({"state": self.tasks[task], **(record.to_json() if record else {})},
                          separators=(",", ":"))

    def apply_transitions(self, records: dict[bytes | str, bytes | str]) -> None:
        """Fold in the transitions recorded since the document was last written whole; newer than it.

        A record that does not parse, or is not shaped as this tool writes it, makes the whole
        session `corrupt` (never done, run again), as a document would.
        """
        for name, raw in records.items():
            task = name.decode(errors="replace") if isinstance(name, bytes) else name
            try:
                doc = safejson.loads(raw)
                if not isinstance(doc, dict):
                    raise Shape(f"is {_json_kind(doc)}, not an object")
                state = doc.get("state")
                if state not in TASK_STATES:
                    raise Shape(f"state is {_json_kind(state)}, not one of {', '.join(TASK_STATES)}")
                record = TaskRecord.parse(doc, "")
            except (ValueError, TypeError) as exc:
                self.corrupt = f"the transition record of {task} is unreadable: {str(exc) or type(exc).__name__}"
                return
            self.tasks[task] = state
            self.details[task] = record

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
            known = {"date", "started_at", "completed_at", "duration_seconds", "all_success", "tasks",
                     "task_details", "attempts", "run_id", "runner", "interrupted"}
            started_at = parse_time(_field(doc, "started_at", _TIME))
            return cls(
                session=session,
                started_at=started_at,
                completed_at=parse_time(_field(doc, "completed_at", _TIME)),
                duration_seconds=_field(doc, "duration_seconds", _NUMBER),
                all_success=_field(doc, "all_success", "true or false") is True,
                tasks=dict(tasks),
                details=details,
                attempts=_field(doc, "attempts", "an integer") or (1 if started_at else 0),
                run_id=_field(doc, "run_id", _TEXT),
                runner=_field(doc, "runner", _TEXT),
                interrupted=_field(doc, "interrupted", _TEXT),
                extra={k: v for k, v in doc.items() if k not in known},
            )
        except (ValueError, TypeError, RecursionError) as exc:
            return cls(session=session, corrupt=str(exc) or type(exc).__name__)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
