"""The Prometheus metrics ([metrics] textfile, [metrics] pushgateway) and the alert rules shipped for them.

The textfile is read back with prometheus_client's parser, as node_exporter would read it;
the push goes to a real Pushgateway (Debian's prometheus-pushgateway) on a loopback port and
is read back as Prometheus scrapes it. The alert rules (deploy/prometheus/alerts.yaml) are
evaluated against the metrics the tool itself writes on a trading day that is done, a
holiday, a weekend, and after a missed, a failed and an overrunning session, with the
shipped refresh (every 15 minutes), with none (stale) and with no metrics at all (absent):
with `promtool test rules` where promtool is installed (Debian's `prometheus` package), and
always with a small evaluator of the rules' expression forms, which fails on any expression
it does not understand (so the rules stay simple enough to be checked this way).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, free_port, marker_tasks
from tradeul_maint import metrics

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
TEXTFILE = "metrics/tradeul_maint.prom"
JOB = ("maint_job", "maintenance")  # every sample about a job names it
LOOKBACK_TO_25 = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24"]


def configure(project, fail: tuple[str, ...] = (), extra: str = "") -> Path:
    (project.root / "metrics").mkdir(exist_ok=True)
    project.write_config(f'[metrics]\ntextfile = "{TEXTFILE}"\n{extra}\n'
                         + marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}, fail=fail))
    return project.root / TEXTFILE


def read_metrics(path: Path) -> dict[tuple[str, tuple], float]:
    """(name, sorted labels) -> value, as a scraper parses the file."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


def done(r, *sessions: str) -> None:
    for session in sessions:
        r.set(f"maintenance:status:{session}", json.dumps({
            "date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:01:00+00:00",
            "duration_seconds": 60.0, "all_success": True, "tasks": {"a": "completed", "b": "completed"},
            "attempts": 1, "run_id": f"run-{session}"}))


def not_done(values: dict) -> dict[str, float]:
    return {dict(labels)["state"]: v for (name, labels), v in values.items() if name == "tradeul_maint_sessions_not_done"}


def test_after_a_cycle_the_textfile_says_what_the_cycle_did(project, r):
    path = configure(project, fail=("b",))
    done(r, *LOOKBACK_TO_25)
    result = project.cli("run", "--now", "2026-11-25T17:05")
    assert result.exit_code == 1
    values = read_metrics(path)
    assert values[("tradeul_maint_task_success", (JOB, ("task", "a")))] == 1
    assert values[("tradeul_maint_task_success", (JOB, ("task", "b")))] == 0
    assert values[("tradeul_maint_task_duration_seconds", (JOB, ("task", "a")))] >= 0
    assert values[("tradeul_maint_cycle_attempts", (JOB, ("session", "2026-11-25")))] == 1
    assert not [k for k in values
                if k[0] == "tradeul_maint_cycle_attempts" and k[1] != (JOB, ("session", "2026-11-25"))]
    # 2026-11-24 closed at 16:00 New York, 21:00 UTC; the 25th's window is still open: nothing overdue yet.
    assert values[("tradeul_maint_last_success_session_timestamp_seconds", (JOB,))] == \
        dt.datetime(2026, 11, 24, 21, 0, tzinfo=dt.timezone.utc).timestamp()
    assert sum(not_done(values).values()) == 0
    written = values[("tradeul_maint_metrics_timestamp_seconds", ())]
    assert abs(written - dt.datetime(2026, 11, 25, 22, 5, tzinfo=dt.timezone.utc).timestamp()) < 60
    assert values[("tradeul_maint_calendar_days_left", ())] > 30


def test_a_run_of_an_older_session_reports_that_cycle(project, r):
    path = configure(project)
    done(r, "2026-11-24")
    assert project.cli("run", "--date", "2026-11-03", "--now", "2026-11-25T12:00").exit_code == 0
    values = read_metrics(path)
    assert values[("tradeul_maint_task_success", (JOB, ("task", "b")))] == 1
    assert "2026-11-03" in (project.root / TEXTFILE).read_text()  # the HELP names the cycle's session


def test_status_check_rewrites_it_with_the_sessions_not_done(project, r):
    path = configure(project, fail=("b",))
    done(r, *LOOKBACK_TO_25[:-1])  # 2026-11-24 missing
    assert project.cli("run", "--date", "2026-11-25", "--now", "2026-11-25T17:05").exit_code == 1
    before = path.stat().st_mtime_ns
    result = project.cli("status", "--check", "--now", "2026-11-25T18:00")
    assert result.exit_code == 1
    values = read_metrics(path)
    assert path.stat().st_mtime_ns != before
    assert not_done(values) == {"failed": 1, "missing": 1, "interrupted": 0, "corrupt": 0, "running": 0,
                                "waiting": 0, "expired": 0}
    assert values[("tradeul_maint_cycle_attempts", (JOB, ("session", "2026-11-24")))] == 0
    assert values[("tradeul_maint_cycle_attempts", (JOB, ("session", "2026-11-25")))] == 1
    assert values[("tradeul_maint_task_success", (JOB, ("task", "b")))] == 0  # the newest recorded cycle


@pytest.mark.parametrize("now, sessions_done", [
    ("2026-11-26T18:00", LOOKBACK_TO_25 + ["2026-11-25"]),  # Thanksgiving: no session, no window
    ("2026-11-28T18:00", LOOKBACK_TO_25 + ["2026-11-25", "2026-11-27"]),  # a Saturday
])
def test_a_holiday_or_a_weekend_has_nothing_not_done(project, r, now, sessions_done):
    path = configure(project)
    done(r, *sessions_done)
    assert project.cli("status", "--check", "--now", now).exit_code == 0
    values = read_metrics(path)
    assert sum(not_done(values).values()) == 0
    assert not [k for k in values if k[0] == "tradeul_maint_cycle_attempts"]


def test_the_file_is_replaced_by_a_rename_never_rewritten_in_place(project, r):
    path = configure(project)
    done(r, *LOOKBACK_TO_25)
    assert project.cli("status", "--check", "--now", "2026-11-25T12:00").exit_code == 0
    old = path.read_text()
    os.link(path, path.with_name("old.link"))  # a reader holding the old file
    assert project.cli("status", "--check", "--now", "2026-11-25T18:00").exit_code == 1
    assert path.with_name("old.link").read_text() == old  # untouched: the new content went to a new inode
    assert path.read_text() != old
    assert sorted(p.name for p in path.parent.iterdir()) == ["old.link", "tradeul_maint.prom"]  # no temp left
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # node_exporter runs as another user


def test_a_textfile_that_cannot_be_written_changes_neither_exit_code_nor_state(project, r):
    project.write_config('[metrics]\ntextfile = "no-such-dir/tradeul_maint.prom"\n'
                         + marker_tasks(project.root, ["a"]))
    result = project.cli("run", "--date", "2026-11-25", "--now", "2026-11-26T12:00")
    assert result.exit_code == 0
    assert json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
    log = (project.log_dir / "maintenance.log").read_text()
    assert '"event": "metrics_write_failed"' in log and "no-such-dir" in log


def test_a_textfile_not_named_prom_is_a_config_error(project):
    project.write_config('[metrics]\ntextfile = "/tmp/tradeul_maint.txt"\n' + marker_tasks(project.root, ["a"]))
    result = project.cli("status", "--check")
    assert result.exit_code == 78
    assert "[metrics] textfile = '/tmp/tradeul_maint.txt': node_exporter reads only files ending in .prom" in \
        result.stderr


# --- the Pushgateway ----------------------------------------------------------------------------


def pushed(gateway) -> dict[tuple[str, tuple], float]:
    """The tool's samples as Prometheus scrapes them from the Pushgateway: (name, labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(gateway.metrics()) for s in family.samples
            if s.labels.get("job") == "tradeul_maint"}


def without_group(values: dict, **group: str) -> dict[tuple[str, tuple], float]:
    """Pushed samples less the group's labels (each must carry them) and the Pushgateway's own push times."""
    out = {}
    for (name, labels), value in values.items():
        labelled = dict(labels)
        assert {k: labelled.pop(k) for k in ("job", *group)} == {"job": "tradeul_maint", **group}, labels
        labelled.pop("instance", None)  # the Pushgateway adds instance="" to a group that has none
        if name not in ("push_time_seconds", "push_failure_time_seconds"):
            out[(name, tuple(sorted(labelled.items())))] = value
    return out


def test_every_cycle_and_status_push_the_textfiles_metrics_to_the_pushgateway(project, r, pushgateway):
    path = configure(project, fail=("b",), extra=f'pushgateway = "{pushgateway.url}"')
    done(r, *LOOKBACK_TO_25)
    assert project.cli("run", "--now", "2026-11-25T17:05").exit_code == 1
    after_cycle = without_group(pushed(pushgateway), key_prefix="maintenance")
    assert after_cycle == read_metrics(path)
    assert after_cycle[("tradeul_maint_task_success", (JOB, ("task", "b")))] == 0
    # status --check an hour later: the same group replaced whole (PUT), with the new time and the failed session.
    assert project.cli("status", "--check", "--now", "2026-11-25T18:05").exit_code == 1
    later = without_group(pushed(pushgateway), key_prefix="maintenance")
    assert later == read_metrics(path)
    assert abs(later[("tradeul_maint_metrics_timestamp_seconds", ())] - utc(2026, 11, 25, 23, 5)) < 60
    assert not_done(later)["failed"] == 1
    # A plain `status` reads the same state: it refreshes them too.
    assert project.cli("status", "--now", "2026-11-25T18:35").exit_code == 0
    refreshed = without_group(pushed(pushgateway), key_prefix="maintenance")
    assert abs(refreshed[("tradeul_maint_metrics_timestamp_seconds", ())] - utc(2026, 11, 25, 23, 35)) < 60


def utc(*fields: int) -> float:
    return dt.datetime(*fields, tzinfo=dt.timezone.utc).timestamp()


def test_the_environment_names_the_pushgateway_and_the_group_is_the_key_prefix(project, r, pushgateway):
    # No textfile: the Pushgateway alone (a CronJob's pod). A key prefix with a slash, which a URL path cannot
    # carry as it is: prometheus-client encodes it, the Pushgateway decodes it back into the label.
    project.write_config('[redis]\nkey_prefix = "eod/maint"\n[metrics]\npushgateway = "http://127.0.0.1:1"\n'
                         + marker_tasks(project.root, ["a"]))
    assert project.cli("status", "--check", "--now", "2026-11-25T18:00",
                       TRADEUL_MAINT_PUSHGATEWAY=pushgateway.url).exit_code == 1
    values = without_group(pushed(pushgateway), key_prefix="eod/maint")
    assert not_done(values)["missing"] == 7  # nothing under that prefix: every session of the lookback
    assert not list(project.root.rglob("*.prom"))


def test_a_pushgateway_that_is_down_is_one_warning_and_changes_nothing_else(project, r):
    port = free_port()  # nothing listens there
    done(r, *LOOKBACK_TO_25)
    project.write_config(f'[metrics]\npushgateway = "http://127.0.0.1:{port}/"\n' + marker_tasks(project.root, ["a"]))
    result = project.cli("run", "--date", "2026-11-25", "--now", "2026-11-26T12:00")
    assert result.exit_code == 0
    assert json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
    warnings = [line for line in result.stderr.splitlines() if "metrics_push_failed" in line]
    assert len(warnings) == 1 and f"host=127.0.0.1" in warnings[0] and "Connection refused" in warnings[0]
    assert result.stdout.startswith("2026-11-25: 1/1 tasks completed")
    log = (project.log_dir / "maintenance.log").read_text()
    assert '"event": "metrics_push_failed"' in log
    quiet = project.cli("-q", "status", "--check", "--now", "2026-11-26T12:00")
    assert (quiet.exit_code, quiet.stderr) == (0, "")  # -q: in the log file only


class Trickle:
    """A loopback server that accepts, reads the request, and answers one byte every 0.2 s, forever."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            while not self.closed.wait(0.2):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def test_a_pushgateway_that_never_finishes_answering_costs_the_timeout_and_no_more(project):
    project.write_config(marker_tasks(project.root, ["a"]))
    server = Trickle()
    try:
        started = time.monotonic()
        # urllib's own timeout (per socket operation) never fires here: each byte comes within it.
        assert metrics.push(server.url, "# TYPE x gauge\nx 1\n", "maintenance", timeout=0.5) is False
        assert time.monotonic() - started < 30  # not the hours a trickle could last; the limit is the thread's
    finally:
        server.close()


@pytest.mark.parametrize("url, message", [
    ("pushgateway:9091", "expected e.g. \"http://pushgateway:9091\""),
    ("ftp://pushgateway:9091", "expected e.g. \"http://pushgateway:9091\""),
    ("http://user:s3cret@pushgateway:9091", "credentials in the URL are not supported"),
    ("http://user:s3cret/@x@pushgateway:9091", "credentials in the URL are not supported"),
])
def test_a_pushgateway_url_that_is_not_one_is_a_config_error(project, url, message):
    project.write_config(f'[metrics]\npushgateway = "{url}"\n' + marker_tasks(project.root, ["a"]))
    result = project.cli("status", "--check")
    assert result.exit_code == 78
    assert "[metrics] pushgateway" in result.stderr and message in result.stderr
    assert "s3cret" not in result.stderr
    from_env = project.cli("status", "--check", TRADEUL_MAINT_PUSHGATEWAY=url)
    assert from_env.exit_code == 78 and "TRADEUL_MAINT_PUSHGATEWAY" in from_env.stderr


def test_the_cron_tick_does_not_import_prometheus_client(project, r):
    project.write_config('[metrics]\npushgateway = "http://127.0.0.1:1"\n' + marker_tasks(project.root, ["a"]))
    done(r, *LOOKBACK_TO_25)
    tick = project.run("-q", "run", "--now", "2026-11-25T12:00", PYTHONPROFILEIMPORTTIME="1")
    assert (tick.returncode, tick.stdout) == (0, "")
    imported = {line.split("|")[-1].strip() for line in tick.stderr.splitlines() if line.startswith("import time:")}
    assert "redis" in imported and not {m for m in imported if m.startswith("prometheus_client")}


# --- the alert rules ------------------------------------------------------------------------------


def scenario(project, r, name: str) -> dict[tuple[str, tuple], float]:
    """The textfile the tool writes in each situation the rules must tell apart."""
    path = configure(project, fail=("b",) if name == "failed" else ())
    if name == "done":
        done(r, *LOOKBACK_TO_25, "2026-11-25")
        now = "2026-11-25T18:00"
    elif name == "holiday":
        done(r, *LOOKBACK_TO_25, "2026-11-25")
        now = "2026-11-26T18:00"
    elif name == "weekend":
        done(r, *LOOKBACK_TO_25, "2026-11-25", "2026-11-27")
        now = "2026-11-28T12:00"
    elif name == "missed":
        done(r, *LOOKBACK_TO_25)
        now = "2026-11-25T18:00"
    elif name == "failed":
        done(r, *LOOKBACK_TO_25)
        assert project.cli("run", "--now", "2026-11-25T17:05").exit_code == 1
        now = "2026-11-25T18:00"
    elif name == "overrunning":
        done(r, *LOOKBACK_TO_25)
        r.set("maintenance:status:2026-11-25", json.dumps({
            "date": "2026-11-25", "started_at": "2026-11-25T22:01:00+00:00", "completed_at": None,
            "all_success": False, "tasks": {"a": "in_progress", "b": "pending"}, "attempts": 1, "run_id": "live"}))
        r.set("maintenance:lock", json.dumps({"host": "w", "pid": 1, "since": "2026-11-25T22:01:00+00:00",
                                              "run_id": "live", "nonce": "n"}), px=60000)
        now = "2026-11-25T18:00"
    project.cli("status", "--check", "--now", now)
    return read_metrics(path)


# Which alerts each situation must raise, by alert name and the labels it carries.
EXPECTED = {
    "done": {},  # a trading day whose session is done
    "holiday": {},
    "weekend": {},
    "missed": {"TradeulMaintSessionMissed": [{"severity": "critical", "state": "missing", "maint_job": "maintenance"}]},
    "failed": {"TradeulMaintSessionMissed": [{"severity": "critical", "state": "failed", "maint_job": "maintenance"}]},
    "overrunning": {"TradeulMaintCycleOverrunning": [{"severity": "warning", "state": "running",
                                                      "maint_job": "maintenance"}]},
}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def rule(name: str) -> dict:
    return next(r for r in rules() if r["alert"] == name)


def series_name(name: str, labels: tuple) -> str:
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")


SIMPLE = re.compile(r"^(?P<now>time\(\) - )?(?P<name>[a-z_]+)(?:\{(?P<matchers>[^}]*)\})? (?P<op>[<>]) "
                    r"(?P<limit>[\d.]+)$")
ABSENT = re.compile(r"^absent\((?P<name>[a-z_]+)\)$")


def firing(expr: str, values: dict[tuple[str, tuple], float], now: float) -> list[dict[str, str]]:
    """The label sets an expression of the forms `metric{matchers} > N`, `time() - metric > N` or
    `absent(metric)` returns."""
    if match := ABSENT.match(expr.strip()):
        return [] if any(name == match["name"] for name, _ in values) else [{}]
    match = SIMPLE.match(expr.strip())
    assert match, f"the evaluator understands only `metric{{...}} > N`, `time() - metric > N`, absent(): {expr!r}"
    matchers = [re.match(r'^(\w+)(!?=)"(.*)"$', m.strip()).groups() for m in (match["matchers"] or "").split(",")
                if m.strip()]
    hits = []
    for (name, labels), value in values.items():
        labelled = dict(labels)
        if name != match["name"] or not all((labelled.get(k) == v) == (op == "=") for k, op, v in matchers):
            continue
        value = now - value if match["now"] else value
        limit = float(match["limit"])
        if value > limit if match["op"] == ">" else value < limit:
            hits.append(labelled)
    return hits


@pytest.mark.parametrize("name", list(EXPECTED))
def test_alert_expressions_fire_only_for_a_missed_session(project, r, name):
    values = scenario(project, r, name)
    written = values[("tradeul_maint_metrics_timestamp_seconds", ())]
    for each in rules():
        labels = [{**found, **each.get("labels", {})} for found in firing(each["expr"], values, now=written + 60)]
        assert labels == EXPECTED[name].get(each["alert"], []), (name, each["alert"])


def test_the_stale_and_absent_rules_fire_when_nothing_writes_or_collects_the_metrics(project, r):
    values = scenario(project, r, "done")
    written = values[("tradeul_maint_metrics_timestamp_seconds", ())]
    stale, absent = rule("TradeulMaintMetricsStale"), rule("TradeulMaintMetricsAbsent")
    assert firing(stale["expr"], values, now=written + 2 * 3600)
    assert not firing(stale["expr"], values, now=written + 30 * 60)  # two refreshes (15 minutes apart) late
    assert not firing(absent["expr"], values, now=written)
    assert firing(absent["expr"], {}, now=written) == [{}]


def test_every_alert_has_a_runbook_in_docs_monitoring():
    """Each runbook_url names a section of docs/monitoring.md that exists (GitHub's anchor for its heading)."""
    headings = [line.lstrip("#").strip() for line in (REPO / "docs" / "monitoring.md").read_text().splitlines()
                if line.startswith("#")]
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    for each in rules():
        url = each["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("/docs/monitoring.md") and anchor == each["alert"].lower(), url
        assert anchor in anchors, f"docs/monitoring.md has no section {each['alert']!r} for {url}"


PROMTOOL = shutil.which("promtool")
REFRESH = 15 * 60  # the shipped schedules run `status --check` every 15 minutes, every day
# How long each situation lasts: a weekend from Friday evening to Monday afternoon, a holiday a day.
HOURS = {"weekend": 66, "holiday": 24}


def input_series(values: dict, hours: int, refreshed: bool = True) -> list[dict[str, str]]:
    """promtool's input: each metric as a scrape every minute reads it, for `hours`, the timestamp rising at
    each refresh (every 15 minutes), or frozen when nothing writes the metrics any more."""
    minutes, samples = REFRESH // 60, hours * 60
    series = []
    for (metric, labels), value in values.items():
        if metric != "tradeul_maint_metrics_timestamp_seconds":
            step = f"{value:g}x{samples}"
        elif refreshed:  # a staircase: the same value for 15 samples, then the next refresh's
            step = " ".join(f"{k * REFRESH}x{minutes - 1}" for k in range(samples // minutes + 1))
        else:
            step = f"0x{samples}"
        series.append({"series": series_name(metric, labels), "values": step})
    return series


def expect(at: str, expected: dict[str, list[dict]], values: dict) -> list[dict]:
    """promtool's expectations at `at` for every rule: the alerts `expected` names, no other."""
    return [{"eval_time": at, "alertname": each["alert"],
             "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations(each, labels, values)}
                            for labels in expected.get(each["alert"], [])]}
            for each in rules()]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; "
                                             ".ci/system-packages does it where it can)")
def test_promtool_checks_the_rules_and_their_alerts_on_the_tools_metrics(project, r, tmp_path):
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = []
    for name, expected in EXPECTED.items():
        r.flushdb()
        values = scenario(project, r, name)
        # With the shipped refresh: what each situation raises 3 hours in; a weekend and a holiday stay quiet
        # all along, every rule evaluated every minute.
        hours = HOURS.get(name, 3)
        times = [f"{h}h" for h in range(3, hours + 1, 3)]
        tests.append({"interval": "1m", "input_series": input_series(values, hours),
                      "alert_rule_test": [e for at in times for e in expect(at, expected, values)]})
        if name == "done":  # a trading day whose file nobody rewrites any more: stale after an hour (and 15m)
            stale = {"TradeulMaintMetricsStale": [{"severity": "warning"}]}
            tests.append({"interval": "1m", "input_series": input_series(values, 3, refreshed=False),
                          "alert_rule_test": expect("30m", {}, values) + expect("3h", stale, values)})
    # No metrics at all (never written, or nobody collects them): only the absence rule, after 30 minutes.
    absent = {"TradeulMaintMetricsAbsent": [{"severity": "warning"}]}
    tests.append({"interval": "1m", "input_series": [{"series": 'up{job="node"}', "values": "1x120"}],
                  "alert_rule_test": expect("15m", {}, {}) + expect("1h", absent, {})})
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def annotations(each: dict, labels: dict, values: dict) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for this alert ($value, $labels.state)."""
    value = next((v for (name, lab), v in values.items() if name in each["expr"] and
                  dict(lab).get("state") == labels.get("state")), 0)
    return {key: text.replace("{{ $value }}", f"{value:g}").replace("{{ $labels.state }}", labels.get("state", ""))
            for key, text in each.get("annotations", {}).items()}
