"""The Prometheus textfile ([metrics] textfile) and the alert rules shipped for it.

The textfile is read back with prometheus_client's parser, as node_exporter would read it.
The alert rules (deploy/prometheus/alerts.yaml) are evaluated against the textfiles the
tool itself writes on a holiday, a weekend, and after a missed, a failed and an
overrunning session: with `promtool test rules` where promtool is installed (Debian's
`prometheus` package), and always with a small evaluator of the rules' two expression
forms, which fails on any expression it does not understand (so the rules stay simple
enough to be checked this way).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, marker_tasks

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
TEXTFILE = "metrics/tradeul_maint.prom"
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
    assert values[("tradeul_maint_task_success", (("task", "a"),))] == 1
    assert values[("tradeul_maint_task_success", (("task", "b"),))] == 0
    assert values[("tradeul_maint_task_duration_seconds", (("task", "a"),))] >= 0
    assert values[("tradeul_maint_cycle_attempts", (("session", "2026-11-25"),))] == 1
    assert not [k for k in values if k[0] == "tradeul_maint_cycle_attempts" and k[1] != (("session", "2026-11-25"),)]
    # 2026-11-24 closed at 16:00 New York, 21:00 UTC; the 25th's window is still open: nothing overdue yet.
    assert values[("tradeul_maint_last_success_session_timestamp_seconds", ())] == \
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
    assert values[("tradeul_maint_task_success", (("task", "b"),))] == 1
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
                                "waiting": 0}
    assert values[("tradeul_maint_cycle_attempts", (("session", "2026-11-24"),))] == 0
    assert values[("tradeul_maint_cycle_attempts", (("session", "2026-11-25"),))] == 1
    assert values[("tradeul_maint_task_success", (("task", "b"),))] == 0  # the newest recorded cycle


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


# --- the alert rules ------------------------------------------------------------------------------


def scenario(project, r, name: str) -> dict[tuple[str, tuple], float]:
    """The textfile the tool writes in each situation the rules must tell apart."""
    path = configure(project, fail=("b",) if name == "failed" else ())
    if name == "holiday":
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
    "holiday": {},
    "weekend": {},
    "missed": {"TradeulMaintSessionMissed": [{"severity": "critical", "state": "missing"}]},
    "failed": {"TradeulMaintSessionMissed": [{"severity": "critical", "state": "failed"}]},
    "overrunning": {"TradeulMaintCycleOverrunning": [{"severity": "warning", "state": "running"}]},
}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def series_name(name: str, labels: tuple) -> str:
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")


SIMPLE = re.compile(r"^(?P<now>time\(\) - )?(?P<name>[a-z_]+)(?:\{(?P<matchers>[^}]*)\})? (?P<op>[<>]) "
                    r"(?P<limit>[\d.]+)$")


def firing(expr: str, values: dict[tuple[str, tuple], float], now: float) -> list[dict[str, str]]:
    """The label sets an expression of the forms `metric{matchers} > N` or `time() - metric > N` returns."""
    match = SIMPLE.match(expr.strip())
    assert match, f"the evaluator understands only `metric{{...}} > N` and `time() - metric > N`: {expr!r}"
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
    for rule in rules():
        labels = [{**found, **rule.get("labels", {})} for found in firing(rule["expr"], values, now=written + 60)]
        assert labels == EXPECTED[name].get(rule["alert"], []), (name, rule["alert"])


def test_the_stale_rule_fires_when_nothing_writes_the_file(project, r):
    values = scenario(project, r, "holiday")
    written = values[("tradeul_maint_metrics_timestamp_seconds", ())]
    stale = [rule for rule in rules() if rule["alert"] == "TradeulMaintMetricsStale"][0]
    assert firing(stale["expr"], values, now=written + 3 * 3600)
    assert not firing(stale["expr"], values, now=written + 600)


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_checks_the_rules_and_their_alerts_on_the_tools_metrics(project, r, tmp_path):
    assert subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True).returncode == 0
    tests = []
    for name, expected in EXPECTED.items():
        r.flushdb()
        values = scenario(project, r, name)
        series = []
        for (metric, labels), value in values.items():
            # Written again every minute, as `status --check` every few minutes keeps it.
            step = "0+60x200" if metric == "tradeul_maint_metrics_timestamp_seconds" else f"{value:g}x200"
            series.append({"series": series_name(metric, labels), "values": step})
        tests.append({"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "150m", "alertname": rule["alert"],
             "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations(rule, labels, values)}
                            for labels in expected.get(rule["alert"], [])]}
            for rule in rules()]})
    # The same holiday metrics with nobody writing the file any more: only the stale rule fires.
    stale = [{"series": s["series"], "values": "0x200" if "timestamp_seconds" in s["series"] and "metrics" in
              s["series"] else s["values"]} for s in tests[0]["input_series"]]
    tests.append({"interval": "1m", "input_series": stale, "alert_rule_test": [
        {"eval_time": "150m", "alertname": "TradeulMaintMetricsStale",
         "exp_alerts": [{"exp_labels": {"severity": "warning"}, "exp_annotations": annotations(
             next(x for x in rules() if x["alert"] == "TradeulMaintMetricsStale"), {}, {})}]},
        {"eval_time": "150m", "alertname": "TradeulMaintSessionMissed", "exp_alerts": []}]})
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def annotations(rule: dict, labels: dict, values: dict) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for this alert ($value, $labels.state)."""
    value = next((v for (name, lab), v in values.items() if name in rule["expr"] and
                  dict(lab).get("state") == labels.get("state")), 0)
    return {key: text.replace("{{ $value }}", f"{value:g}").replace("{{ $labels.state }}", labels.get("state", ""))
            for key, text in rule.get("annotations", {}).items()}
