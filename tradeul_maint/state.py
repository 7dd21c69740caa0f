"""A session's maintenance status: one JSON document per session, rewritten whole on every step.

The document is the session's one source of truth at every moment: the runner rewrites it
(fenced on the run lock, see store.py) each time tasks end or start, before anything that
depends on them happens, so any client reads the latest state with one GET.

The fields `date`, `started_at`, `completed_at`, `duration_seconds`, `all_success` and
`tasks` (name -> pending | in_progress | completed | failed | skipped) are those of the
service being replaced, so documents it wrote read as done here and ours read there.
Everything else (attempts, run id, per-task details, the task list of the latest cycle) is
added alongside.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED = "pending", "in_progress", "completed", "failed", "skipped"
TASK_STATES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED)
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
    # The latest cycle's configured tasks, name -> fingerprint (tasklist.py): what its host ran with.
    task_list: dict[str, str] | None = None
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
        doc = dict(self.extra)
        doc.update({
            "date": self.session.isoformat(),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "duration_seconds": self.duration_seconds,
            "all_success": self.all_success,
            "tasks": self.tasks,
            "task_details": {name: rec.to_json() for name, rec in self.details.items()},
            "attempts": self.attempts,
            "run_id": self.run_id,
            "runner": self.runner,
            "interrupted": self.interrupted,
        })
        if self.task_list is not None:
            doc["task_list"] = self.task_list
        return _compact(doc)

    @classmethod
    def from_json(cls, session: dt.date, raw: str | bytes | None) -> SessionStatus | None:
        """None when there is no document; a `corrupt` status (never done) when it does not parse or is misshapen.

        Anything may have written the key (an older version, another tool, a hand), so every
        field is checked for the type this tool writes, not only the JSON syntax.
        """
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
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
                     "task_details", "attempts", "run_id", "runner", "interrupted", "task_list"}
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
                task_list=task_list,
                extra={k: v for k, v in doc.items() if k not in known},
            )
        except (ValueError, TypeError, RecursionError) as exc:
            return cls(session=session, corrupt=str(exc) or type(exc).__name__)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
