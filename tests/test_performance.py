"""What the performance work relies on, checked without timing anything (bench/ holds the timings).

The cron tick's quick path (cli/main.py): what it imports, that it reads options as typer does,
and that it hands every outcome but a silent "nothing to do" to the full command. The
runner: one round trip per scheduling step, a status document that holds the whole state
(states and details) before each task starts, and the order tasks start in.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import random
import subprocess
import sys
import textwrap

import pytest
import redis

from conftest import count_runs, marker_tasks
from tradeul_maint.cli import commands, main as cli, options, shared
from tradeul_maint.config.settings import TaskSpec
from tradeul_maint.plan.schedule import Schedule, known_durations, priority_order
from tradeul_maint.redisio.keys import Keys
from tradeul_maint.state.document import COMPLETED, IN_PROGRESS, PENDING, SessionStatus, TaskRecord
from tradeul_maint.state.lock import RunLock
from tradeul_maint.state.store import StateStore

DAY = "2026-11-25"  # a Wednesday; window 17:00-17:30 New York
BEFORE_WINDOW = "2026-11-25T12:00"
QUIET = "[schedule]\nauto_recover = false\n"


# --- the cron tick's quick path ------------------------------------------------------------------


def test_a_no_op_tick_loads_neither_pandas_nor_the_command_line_framework(project):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tradeul_maint", "-q", "run",
                             "--now", BEFORE_WINDOW], env=project.env(), cwd=project.root, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == ""
    modules = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
               if line.startswith("import time:")}
    assert "tradeul_maint" in modules and "redis" in modules
    assert not modules & {"pandas", "numpy", "exchange_calendars"}
    assert not modules & {"typer", "click", "pydantic", "rich", "loguru"}  # the quick path answered


TYPER_READS = [
    ["run"],
    ["-q", "run"],
    ["--quiet", "run", "--now", BEFORE_WINDOW],
    ["--config", "other.toml", "run"],
    ["--config=other.toml", "--redis-url", "redis://h:1/2", "--state-dir", "st", "--log-dir=lg", "run"],
    ["run", "--now=2026-11-25T12:00"],
    # global options after the command, as people type them
    ["run", "-q"],
    ["run", "--config", "other.toml"],
    ["run", "--now", BEFORE_WINDOW, "--quiet", "--log-dir=lg", "--state-dir", "st"],
    ["--redis-url", "redis://h:1/2", "run", "--config=run"],
    ["--config", "run", "run", "-q"],
]
NOT_A_PLAIN_TICK = [
    [], ["-v", "run"], ["--verbose", "run"], ["-qv", "run"], ["run", "-v"], ["run", "-qv"], ["run", "--date", DAY],
    ["run", "--dry-run"], ["run", "--force"], ["run", "--task", "a"], ["status"], ["--help"], ["run", "--help"],
    ["--version"], ["--config", "a", "--config", "b", "run"], ["--config", "-x", "run"], ["--config=", "run"],
    ["run", "--now"], ["run", "--now", "x", "--now", "y"], ["--now", BEFORE_WINDOW, "run"], ["run", "extra"],
    ["--", "run"], ["-q=1", "run"], ["--quiet=yes", "run"], ["run", "--config"], ["run", "--", "-q"],
    ["--config", "a", "run", "--config", "b"], ["run", "--quiet=yes"], ["run", "--now", "x", "-h"],
]


@pytest.mark.parametrize("argv", TYPER_READS)
@pytest.mark.parametrize("env_now", [None, "2026-11-24T09:00"])
def test_the_quick_path_reads_a_tick_as_typer_does(project, monkeypatch, argv, env_now):
    seen = {}

    class Parsed(Exception):
        pass

    def settings(self, require_tasks=True, log_files=True):
        seen["overrides"], seen["quiet"] = self.overrides, self.quiet
        return None

    def prepare(settings, now):
        seen["now"] = now
        raise Parsed

    monkeypatch.setattr(shared.Globals, "settings", settings)
    monkeypatch.setattr(commands.basis, "prepare", prepare)
    env = {"TRADEUL_MAINT_NOW": env_now} if env_now else {}
    result = project.cli(*argv, **env)
    assert result.exit_code == 70, result.output  # Parsed, reported as unexpected: typer read it all
    tick = cli.parse_tick(argv, project.env(**env))
    assert tick is not None
    o = seen["overrides"]
    assert (tick.config, tick.redis_url, tick.state_dir, tick.log_dir) == (o.config, o.redis_url, o.state_dir,
                                                                             o.log_dir)
    assert (tick.quiet, tick.now) == (seen["quiet"], seen["now"])


@pytest.mark.parametrize("argv", NOT_A_PLAIN_TICK)
def test_anything_but_a_plain_tick_goes_to_typer(argv):
    assert cli.parse_tick(argv, {}) is None


def test_the_flags_are_declared_once_for_both_paths():
    from typer.main import get_command

    group = get_command(commands.app)
    declared = {p.name: tuple(p.opts) for p in group.params if p.name in options.OPTIONS_BY_NAME}
    assert declared == {option.name: option.flags for option in options.GLOBAL_OPTIONS}
    now = next(p for p in group.commands["run"].params if p.name == "now")
    assert now.opts == [options.NOW_FLAG] and now.envvar == options.NOW_ENVVAR


def tick(project, now: str) -> cli.Tick:
    """The tick `tradeul-maint run --now NOW` is, with the project's files and Redis given as options."""
    return cli.Tick(config=project.config, redis_url=project.redis_url, state_dir=project.state_dir,
                    log_dir=project.log_dir, now=now)


def log_events(project) -> list[str]:
    path = project.log_dir / "maintenance.log"
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []


def test_the_quick_path_answers_only_a_silent_nothing_to_do(project, r):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    quiet = project.run("-q", "run", "--now", BEFORE_WINDOW)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert cli.quiet_tick(tick(project, BEFORE_WINDOW)) is True
    assert r.keys("*") == [] and log_events(project) == []

    inside = project.run("run", "--now", "2026-11-25T17:05")  # work to do: the full command runs it
    assert inside.returncode == 0 and f"{DAY}: 1/1 tasks completed" in inside.stdout
    assert cli.quiet_tick(tick(project, "2026-11-25T17:10")) is True  # done now

    bad = project.run("run", "--now", "yesterday")
    assert bad.returncode == 2 and "--now 'yesterday'" in bad.stderr


def test_a_tick_that_would_log_goes_the_full_way(project, calendar_cache):
    from tradeul_maint.config.settings import CalendarOverrides
    from tradeul_maint.plan.calendar import load_calendar

    project.write_config(QUIET + "[logging]\nlevel = 'DEBUG'\n" + marker_tasks(project.root, ["a"]))
    assert cli.quiet_tick(tick(project, BEFORE_WINDOW)) is False
    debug = project.run("run", "--now", BEFORE_WINDOW)
    assert (debug.returncode, debug.stdout, debug.stderr) == (0, "", "")
    assert "nothing_to_do" in log_events(project)

    last = load_calendar("XNYS", CalendarOverrides(), calendar_cache).library_last_session
    near_the_end = f"{last - dt.timedelta(days=5)}T06:00"
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    assert cli.quiet_tick(tick(project, near_the_end)) is False
    warned = project.run("run", "--now", near_the_end)
    assert (warned.returncode, warned.stdout, warned.stderr) == (0, "", "")
    assert "calendar_expiring" in log_events(project)


def test_an_unreachable_redis_is_reported_once_by_the_quick_path(project):
    project.write_config(QUIET + marker_tasks(project.root, ["a"]))
    result = project.run("run", "--now", BEFORE_WINDOW, TRADEUL_MAINT_REDIS_URL="redis://:secret@127.0.0.1:1/0")
    assert result.returncode == 75 and result.stdout == ""
    assert result.stderr.startswith("tradeul-maint: Redis at redis://:***@127.0.0.1:1/0 is unreachable")
    assert len(result.stderr.splitlines()) == 1 and "secret" not in result.stderr
    full = project.cli("run", "--now", BEFORE_WINDOW, TRADEUL_MAINT_REDIS_URL="redis://:secret@127.0.0.1:1/0")
    assert full.exit_code == 75 and full.stderr == result.stderr  # the same line as the full command's


# --- the cycle's writes ---------------------------------------------------------------------------

LOOKER = """\
import json


def look(ctx):
    doc = json.loads(ctx.redis.get(f"maintenance:status:{ctx.date}"))
    finished = sorted(n for n, d in doc["task_details"].items() if d.get("duration_seconds") is not None)
    ctx.report(seen=json.dumps(doc["tasks"], sort_keys=True), finished=finished)
"""


def looking_tasks(project, count: int, chain: bool, parallel: int = 1) -> list[str]:
    (project.root / "perf_look.py").write_text(LOOKER)
    names = [f"t{i:02d}" for i in range(count)]
    project.write_config(f"[run]\nmax_parallel = {parallel}\n" + "".join(
        f'[[tasks]]\nname = "{n}"\npython = "perf_look:look"\n' + (f'after = ["{names[i - 1]}"]\n' if chain and i
                                                                    else "") for i, n in enumerate(names)))
    return names


def test_each_step_of_a_cycle_is_one_round_trip(project, r):
    names = looking_tasks(project, 60, chain=False)
    assert project.cli("run", "--date", DAY).exit_code == 0  # and the scripts are loaded
    r.config_resetstat()
    result = project.cli("run", "--date", DAY, "--force")
    assert result.exit_code == 0, result.output
    scripts = r.info("commandstats")["cmdstat_evalsha"]["calls"]
    # One per step (start the first task; each next task with the end of the one before; the last end),
    # plus the whole writes at the start and end, and the lock's release.
    assert scripts <= len(names) + 4, scripts
    assert sorted(r.keys("maintenance:*")) == [f"maintenance:executed:{DAY}", "maintenance:last_run",
                                               f"maintenance:status:{DAY}"]  # the document is the state


def test_the_stored_document_is_the_whole_state_before_each_task_starts(project, r):
    """Every task reads, with one GET, the states and the details of all the tasks before it: nothing lags."""
    names = looking_tasks(project, 30, chain=True)
    result = project.cli("run", "--date", DAY)
    assert result.exit_code == 0, result.output
    doc = json.loads(r.get(f"maintenance:status:{DAY}"))
    for i, name in enumerate(names):
        seen = json.loads(doc["task_details"][name]["result"]["seen"])
        expected = {n: COMPLETED if j < i else IN_PROGRESS if j == i else PENDING for j, n in enumerate(names)}
        assert seen == expected, name
        assert doc["task_details"][name]["result"]["finished"] == names[:i], name
    assert doc["all_success"] is True


def test_a_runner_that_dies_mid_cycle_leaves_the_whole_state_in_the_document(project, r, redis_url):
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"], deps={"b": ["a"]}))
    client = redis.Redis.from_url(redis_url)
    store = StateStore(client, Keys(), 30, 60)
    session = dt.date.fromisoformat(DAY)
    lock = RunLock(client, Keys().lock, 60, "crashed", "2026-11-25T22:00:00+00:00")
    lock.acquire()
    status = SessionStatus(session, started_at=dt.datetime(2026, 11, 25, 22, tzinfo=dt.timezone.utc), attempts=1,
                           tasks={"a": PENDING, "b": PENDING, "c": PENDING})
    store.write(lock.token, status)
    status.tasks.update(a=COMPLETED, b=IN_PROGRESS)
    status.details["a"] = TaskRecord(duration_seconds=1.5, attempts=1)
    status.details["b"] = TaskRecord(started_at="2026-11-25T22:00:02.000+00:00")
    store.write(lock.token, status)
    lock.release()  # the runner dies here; its lease runs out

    doc = json.loads(r.get(f"maintenance:status:{DAY}"))  # what any client reads: one GET
    assert doc["tasks"] == {"a": "completed", "b": "in_progress", "c": "pending"}
    assert doc["task_details"]["a"]["duration_seconds"] == 1.5
    shown = json.loads(project.cli("status", "--date", DAY, "--json").stdout)
    assert {t["name"]: t["duration_seconds"] for t in shown["sessions"][0]["tasks"]}["a"] == 1.5

    result = project.run("run", "--date", DAY)  # resumes: a stays done, b and c run
    assert result.returncode == 0, result.stderr
    assert (project.root / "a.count").exists() is False
    doc = json.loads(r.get(f"maintenance:status:{DAY}"))
    assert doc["all_success"] is True and doc["task_details"]["a"]["duration_seconds"] == 1.5
    client.close()


def test_a_transitions_hash_left_by_the_previous_version_loses_no_state(project, r):
    """A runner of the previous version died mid-cycle: its document's `tasks` map was exact, its hash held
    the details since its last whole write. The hash is not read: no completed task runs again."""
    project.write_config(QUIET + marker_tasks(project.root, ["a", "b", "c"], deps={"b": ["a"]}))
    r.set(f"maintenance:status:{DAY}",  # as it wrote it: states padded in fixed-width slots
          f'{{"date":"{DAY}","started_at":"2026-11-25T22:00:00.000+00:00","completed_at":null,"all_success":false,'
          '"tasks":{"a":"completed"  ,"b":"in_progress","c":"pending"    },"task_details":{},"attempts":1,'
          '"run_id":"old","runner":"elsewhere:1","interrupted":null}')
    r.hset(f"maintenance:transitions:{DAY}", mapping={"a": '{"state":"completed","duration_seconds":1.5}',
                                                       "b": "not json at all"})
    r.expire(f"maintenance:transitions:{DAY}", 86400)
    shown = project.cli("status", "--date", DAY, "--now", "2026-11-25T18:00")
    assert shown.exit_code == 0 and "interrupted" in shown.stdout
    result = project.run("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert count_runs(project.root, "a") == [] and count_runs(project.root, "b") == [DAY]
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["all_success"] is True
    assert r.ttl(f"maintenance:transitions:{DAY}") > 0  # left to expire


# --- the order tasks start in ---------------------------------------------------------------------


def specs_of(graph: dict[str, tuple[float, list[str]]]) -> dict[str, TaskSpec]:
    return {name: TaskSpec(name=name, python="m:f", after=tuple(after)) for name, (_, after) in graph.items()}


def simulate(order: list[str], specs: dict[str, TaskSpec], seconds: dict[str, float], workers: int) -> float:
    """The wall time of a cycle run the runner's way (schedule.Schedule), with these exact durations."""
    schedule = Schedule(order, specs, done_before=set())
    now, running = 0.0, []
    while True:
        for name in schedule.take_ready(workers - len(running)):
            heapq.heappush(running, (now + seconds[name], name))
        if not running:
            return now
        now, name = heapq.heappop(running)
        schedule.completed(name)


def critical_path(specs: dict[str, TaskSpec], seconds: dict[str, float]) -> float:
    finish: dict[str, float] = {}
    for name in specs:  # the graphs here list every task after its dependencies
        finish[name] = seconds[name] + max((finish[d] for d in specs[name].after), default=0.0)
    return max(finish.values())


def bench_graph() -> dict[str, tuple[float, list[str]]]:
    """bench/bench_cycle.py's 40 tasks: quick chains listed first, the long chain (the critical path) last."""
    graph: dict[str, tuple[float, list[str]]] = {}
    for chain in "abcd":
        for i in range(1, 9):
            graph[f"quick_{chain}{i}"] = (0.1, [f"quick_{chain}{i - 1}"] if i > 1 else [])
    for i in range(1, 4):
        graph[f"lone{i}"] = (0.3, [])
    for i in range(1, 5):
        graph[f"long{i}"] = (0.8, [f"long{i - 1}"] if i > 1 else [])
    graph["report"] = (0.2, ["long4"] + [f"quick_{chain}8" for chain in "abcd"])
    return graph


def test_known_durations_start_the_critical_path_first():
    graph = bench_graph()
    specs, seconds = specs_of(graph), {name: s for name, (s, _) in graph.items()}
    names = list(graph)
    cp = critical_path(specs, seconds)
    known = simulate(priority_order(names, specs, seconds, 4), specs, seconds, 4)
    unknown = simulate(priority_order(names, specs, {}, 4), specs, seconds, 4)
    in_file_order = simulate(names, specs, seconds, 4)
    assert known <= 1.01 * cp
    assert unknown > 1.1 * cp and in_file_order > 1.1 * cp  # what the durations are for


def test_critical_path_first_stays_within_ten_percent_when_the_width_allows():
    rng = random.Random(6)
    checked = 0
    while checked < 150:
        names = [f"t{i}" for i in range(rng.randint(10, 60))]
        density = rng.choice([0.02, 0.05, 0.1, 0.2])
        graph = {n: (rng.choice([0.1, 0.2, 0.5, 1, 2, 5]) * rng.uniform(0.5, 1.5),
                     [m for m in names[:i] if rng.random() < density]) for i, n in enumerate(names)}
        specs, seconds = specs_of(graph), {name: s for name, (s, _) in graph.items()}
        cp = critical_path(specs, seconds)
        if sum(seconds.values()) / 4 > 0.8 * cp:
            continue  # four workers cannot keep up with the graph: the bound is the total work, not the path
        checked += 1
        assert simulate(priority_order(names, specs, seconds, 4), specs, seconds, 4) <= 1.1 * cp


def test_one_worker_keeps_configuration_order():
    graph = bench_graph()
    assert priority_order(list(graph), specs_of(graph), {"long1": 100.0}, 1) == list(graph)


def test_a_failure_blocks_its_dependents_transitively_naming_the_first_blocker():
    specs = {"a": TaskSpec("a", python="m:f"), "b": TaskSpec("b", python="m:f"),
             "c": TaskSpec("c", python="m:f", after=("b", "a")), "d": TaskSpec("d", python="m:f", after=("c",)),
             "e": TaskSpec("e", python="m:f", after=("gone",)), "f": TaskSpec("f", python="m:f", after=("done",))}
    schedule = Schedule(list(specs), specs, done_before={"done"})
    assert schedule.take_blocked() == [("e", "gone")]
    assert schedule.take_ready(10) == ["a", "b", "f"]
    schedule.completed("b")
    schedule.failed("a")
    assert schedule.take_blocked() == [("c", "a"), ("d", "c")]
    assert schedule.pending == 0 and schedule.take_ready(10) == []


def test_a_chain_of_thousands_is_scheduled_without_recursion():
    n = 5000
    specs = {f"t{i}": TaskSpec(f"t{i}", python="m:f", after=(f"t{i - 1}",) if i else ()) for i in range(n)}
    order = priority_order(list(specs), specs, {}, 4)
    assert order == list(specs)
    schedule = Schedule(order, specs, done_before=set())
    assert schedule.take_ready(4) == ["t0"]
    schedule.failed("t0")
    assert len(schedule.take_blocked()) == n - 1


def test_the_next_session_starts_its_longest_path_first_from_the_last_durations(project, r):
    (project.root / "perf_sleep.py").write_text(textwrap.dedent("""\
        import time


        def sleep(ctx):
            time.sleep(ctx.params["seconds"])
        """))
    tasks = {"short1": 0.05, "short2": 0.05, "long": 0.4}  # the long one last in the file
    project.write_config(QUIET + "[run]\nmax_parallel = 2\n" + "".join(
        f'[[tasks]]\nname = "{n}"\npython = "perf_sleep:sleep"\nparams = {{ seconds = {s} }}\n'
        for n, s in tasks.items()))
    first = project.cli("run", "--now", "2026-11-24T17:05")  # nothing known: file order, short1 and short2 first
    assert first.exit_code == 0, first.output
    # What the first session measured depends on the machine's load (a loaded machine can make a short task
    # take longer than the long one): its durations are set to the nominal ones, so that what is checked is
    # what the runner decides from the last durations, not what a scheduler did.
    key = "maintenance:status:2026-11-24"
    doc = json.loads(r.get(key))
    for name, seconds in tasks.items():
        doc["task_details"][name]["duration_seconds"] = seconds
    r.set(key, json.dumps(doc))
    second = project.cli("run", "--now", "2026-11-25T17:05")
    assert second.exit_code == 0, second.output

    def started(day: str) -> dict[str, str]:
        return {n: d["started_at"] for n, d in json.loads(r.get(f"maintenance:status:{day}"))["task_details"].items()}

    before, after = started("2026-11-24"), started(DAY)
    # Both orders are decided before any task ends: with two workers, the task left out of the first
    # batch starts only after one of the first two has ended, and each batch is recorded in its order.
    assert before["short2"] < before["long"]
    assert after["long"] <= min(after["short1"], after["short2"])
    assert known_durations([None, SessionStatus(dt.date(2026, 11, 25), details={"x": TaskRecord(duration_seconds=2)}),
                            SessionStatus(dt.date(2026, 11, 24), details={"x": TaskRecord(duration_seconds=9),
                                                                          "y": TaskRecord(duration_seconds=1)})]) \
        == {"x": 2, "y": 1}
