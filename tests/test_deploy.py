"""The schedulers' files: crontab.example, deploy/kubernetes, deploy/docker, deploy/systemd.

Each file is parsed, its settings are checked against what the tool needs (a grace period
long enough for `run` to stop its tasks and record them, a KillMode that lets it, a time
zone, no overlapping runs), and the commands and environment it gives the tool are run
here, the way the scheduler would run them, against a real redis-server: the production
paths in them are mapped to temporary directories, the console script stands for the
installed one, and nothing else is changed. Where `systemd-analyze`, `kubectl` or
kubernetes-validate are installed, the files must pass them too.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from tradeul_maint.settings import NotifySettings, RunSettings

CONSOLE_SCRIPT = Path(sys.executable).with_name("tradeul-maint")
CRONTAB = REPO / "crontab.example"
CRONJOB = REPO / "deploy" / "kubernetes" / "cronjob.yaml"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
SERVICE = REPO / "deploy" / "systemd" / "tradeul-maint.service"
TIMER = REPO / "deploy" / "systemd" / "tradeul-maint.timer"
DEPLOY_FILES = [CRONTAB, CRONJOB, DOCKERFILE, SERVICE, TIMER]

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
            "/var/lib/tradeul-maint": str(root / "state"),
            "/var/log/tradeul": str(root / "log"),
            "/etc/tradeul": str(root / "etc"),
            "/tmp": str(root / "tmp"),
        }
        for path in ("etc", "tmp", "home", "image"):
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
def host(tmp_path, redis_url) -> Host:
    return Host(tmp_path, redis_url)


def mark_done(r, *sessions: str) -> None:
    for session in sessions:
        r.set(f"maintenance:status:{session}", json.dumps({
            "date": session, "started_at": f"{session}T22:00:00+00:00", "completed_at": f"{session}T22:00:05+00:00",
            "all_success": True, "tasks": {}, "attempts": 1}))


def accepted_env_names() -> set[str]:
    """The variables the tool reads: the names spelled out in settings.py and cli.py."""
    source = (REPO / "tradeul_maint" / "settings.py").read_text() + (REPO / "tradeul_maint" / "cli.py").read_text()
    return set(re.findall(r'"((?:TRADEUL_MAINT_[A-Z_]+)|REDIS_URL)"', source))


def active_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_variable_the_files_set_is_one_the_tool_reads():
    known = accepted_env_names()
    assert {"TRADEUL_MAINT_CONFIG", "TRADEUL_MAINT_REDIS_URL", "TRADEUL_MAINT_CALENDAR_CACHE"} <= known
    for path in (CRONTAB, CRONJOB, DOCKERFILE, SERVICE):
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


def test_crontab_declares_mail_time_zone_and_config():
    env, jobs = crontab()
    assert env["MAILTO"] and env["CRON_TZ"] == "America/New_York"
    assert env["TRADEUL_MAINT_CONFIG"] == "/etc/tradeul/maint.toml"
    commands = [shlex.split(command)[1:3] for _, command in jobs]
    assert ["-q", "run"] in commands and ["status", "--check"] in commands
    runs = [schedule for schedule, command in jobs if " run" in command]
    assert runs == ["*/5 13-21 * * *"]  # New York hours, through CRON_TZ: 13:00 to 21:55 covers every window


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
        volumes = {v["name"]: v for v in job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mounts["/etc/tradeul"]]["configMap"]["name"] == "tradeul-maint"
        secrets = [e["valueFrom"]["secretKeyRef"]["name"] for e in container(job)["env"] if "valueFrom" in e]
        assert secrets == ["tradeul-maint-redis"]


def pod_env(host: Host, job: dict) -> dict[str, str]:
    """The container's environment (the image's, then the manifest's), the Secret's URL being the test Redis."""
    env = host.env({**dockerfile_env(host), **{e["name"]: e["value"] for e in container(job)["env"] if "value" in e}})
    for entry in container(job)["env"]:
        if "valueFrom" in entry:
            assert entry["valueFrom"]["secretKeyRef"]["key"] == "url", entry
            env[entry["name"]] = host.redis_url
    return env


def configmap_config(host: Host) -> Path:
    (configmap,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    text = configmap["data"]["maint.toml"]
    tomllib.loads(text)
    return host.config(text)


def dockerfile_env(host: Host) -> dict[str, str]:
    """The image's ENV (final stage), after building the calendar cache as the image build does."""
    instructions = dockerfile()
    env: dict[str, str] = {}
    for keyword, argument in instructions[final_stage(instructions):]:
        if keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(argument)))
    env.pop("PATH")
    assert build_calendar_cache(host).returncode == 0
    return env


def run_pod(host: Host, job: dict, now: str) -> subprocess.CompletedProcess:
    """The container's command with the image's and the manifest's environment."""
    env = {**pod_env(host, job), "TRADEUL_MAINT_NOW": now}
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


def test_the_cronjobs_commands_run_with_the_pods_environment(host, r):
    (host.root / "state").mkdir()
    configmap_config(host)
    jobs = cronjobs()
    mark_done(r, *DONE_BEFORE)
    tick = run_pod(host, jobs["tradeul-maint"], NOON)
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    assert not list((host.root / "state").rglob("calendar-*.json"))  # the image's cache was enough
    missed = run_pod(host, jobs["tradeul-maint-check"], AFTER)
    assert missed.returncode == 1 and missed.stdout.startswith("NOT OK: 1 of 7")  # the check job fails: alert
    ran = run_pod(host, jobs["tradeul-maint"], IN_WINDOW)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(r.get("maintenance:status:2026-11-25"))["tasks"] == {"clear_realtime_caches": "completed",
                                                                           "snapshot": "completed"}
    ok = run_pod(host, jobs["tradeul-maint-check"], AFTER)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: all 7 XNYS sessions")


@pytest.mark.slow
@pytest.mark.skipif(not GNU_TIME.exists(), reason="GNU time (/usr/bin/time) not installed")
def test_memory_requests_and_limits_cover_the_measured_peak_rss(host, r):
    (host.root / "state").mkdir()
    configmap_config(host)
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
                          env=host.env({"CALENDAR": calendar, "PATH": f"{CONSOLE_SCRIPT.parent}:/usr/bin:/bin"}),
                          capture_output=True, text=True, timeout=120)


def test_dockerfile_runs_the_cli_as_a_non_root_user_with_the_calendar_cache_built_in(host, r):
    instructions = dockerfile()
    final = instructions[final_stage(instructions):]
    base = final[0][1]
    assert re.match(r"^python:\$\{PYTHON\}-slim$", base)
    python = next(arg.split("=", 1)[1] for keyword, arg in instructions if keyword == "ARG" and
                  arg.startswith("PYTHON="))
    assert python == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"][2:]
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


@pytest.mark.slow
def test_the_files_the_dockerfile_copies_are_enough_to_build_the_package(tmp_path):
    """The build stage installs from COPY'd files only: a wheel built from just those proves none is missing."""
    src = tmp_path / "src"
    for keyword, argument in dockerfile():
        if keyword == "COPY" and not argument.startswith("--from"):
            *sources, destination = argument.split()
            assert destination.startswith("/src")
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
    assert "tradeul_maint/cli.py" in names and "tradeul_maint/preflight.py" in names


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


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart's program exists: the console script stands in for /opt/tradeul-maint's.
    for path in (SERVICE, TIMER):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/tradeul-maint/.venv/bin/tradeul-maint",
                                                                   str(CONSOLE_SCRIPT)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / SERVICE.name),
                             str(tmp_path / TIMER.name)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (0, "")


def test_the_service_command_runs_with_the_units_environment(host, r):
    service = unit(SERVICE)
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
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert json.loads(r.get("maintenance:status:2026-11-25"))["all_success"] is True
    assert (host.root / "log" / "maintenance.log").exists()  # LogsDirectory= is the default log directory
