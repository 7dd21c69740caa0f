"""The bad-input matrix: every way an operator, a config file, a URL or a stranger's key can be wrong.

Each case runs the CLI as a subprocess (as cron would) and is checked for: the documented
exit code (README and shared contract, "Exit codes"), exactly one line naming the problem
(on stderr; on stdout for `status --check`, whose verdict is its output; the one ✗ line of
`check`, which prints a line per check), no
traceback anywhere, no secret anywhere (output and log files), and Redis unchanged: every
key with its type, value and whether it has a TTL, dumped before and after.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import redis

from conftest import HttpErrorServer, Project, start_redis, start_sentinel
from tradeul_maint.plan.calendar_cache import cache_name, library_version

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from faults import snapshot  # noqa: E402  (bench/faults.py: every key with its type, value and TTL presence)

pytestmark = pytest.mark.slow

DAY = "2026-11-25"  # a Wednesday
NOW = "2026-11-30T12:00"  # the Monday after (market open: cron mode does nothing on its own)
AFTER = "2026-11-25T18:00"
SECRET = "Zq9pS3cr3t"  # a password: must appear nowhere

BASE = """\
[schedule]
auto_recover = false
[calendar]
expiry_warning_days = 0
"""


def with_base(extra: str) -> str:
    """BASE with `extra` (TOML keys, tables) merged in: a table may be declared only once."""
    tables: dict[str, list[str]] = {"": [], "schedule": ["auto_recover = false"],
                                    "calendar": ["expiry_warning_days = 0"]}
    section = ""
    for line in extra.splitlines():
        if line.startswith("[") and not line.startswith("[["):
            section = line.strip("[] ")
            tables.setdefault(section, [])
        elif line.strip():
            tables[section].append(line)
    return "\n".join(tables[""] + [f"[{name}]\n" + "\n".join(lines) for name, lines in tables.items() if name]) + "\n"
TASKS = """
[[tasks]]
name = "a"
command = ["true"]
[[tasks]]
name = "b"
command = ["true"]
after = ["a"]
"""


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    names: tuple[str, ...]  # what the one line must mention (case-insensitive)
    config: str = BASE + TASKS
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Project, redis.Redis, dict], dict[str, str] | None] | None = None
    stream: str = "stderr"  # where the one line is: stderr, stdout, or "check" (the one ✗ line of `check`)
    secrets: tuple[str, ...] = ()


def put(key: str, kind: str, value=None, expire: bool = False):
    """Setup: write one key of the given type before the command runs."""
    def setup(project: Project, r: redis.Redis, servers: dict):
        if kind == "string":
            r.set(key, value)
        elif kind == "hash":
            r.hset(key, mapping=value or {"x": "1"})
        if expire:
            r.expire(key, 3600)
    return setup


def url_env(make: Callable[[dict], str]):
    """Setup: point the tool at a URL built from the servers of the module."""
    def setup(project: Project, r: redis.Redis, servers: dict):
        return {"TRADEUL_MAINT_REDIS_URL": make(servers)}
    return setup


def shape(what: str, document: str) -> Case:
    """A status document of the wrong shape: the session is `corrupt` (not done), never a crash."""
    return Case(f"status document: {what}", ("status", "--check", "--now", AFTER), 1, ("corrupt", DAY),
                setup=put(f"maintenance:status:{DAY}", "string", document.replace("D", DAY), expire=True),
                stream="stdout")


def config(what: str, text: str, *names: str, tasks: str = TASKS, args: tuple[str, ...] = ("run", "--date", DAY)
           ) -> Case:
    return Case(f"config: {what}", args, 78, names, config=with_base(text) + tasks)


def puts(*setups):
    """Setup: several keys."""
    def setup(project: Project, r: redis.Redis, servers: dict):
        for each in setups:
            each(project, r, servers)
    return setup


def write_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def writes(where: Callable[[Project], Path], text: str):
    """Setup: a file of the project's (a log, the calendar cache) holds `text`."""
    def setup(project: Project, r: redis.Redis, servers: dict):
        write_file(where(project), text)
    return setup


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def password_file(make: Callable[[Project], Path]):
    """Setup: a URL to the password-protected server, its password read from the file `make` makes."""
    def setup(project: Project, r: redis.Redis, servers: dict):
        return {"TRADEUL_MAINT_REDIS_URL": f"redis://127.0.0.1:{servers['auth_port']}/0",
                "TRADEUL_MAINT_REDIS_PASSWORD_FILE": str(make(project))}
    return setup


def unwritable(project: Project, r, servers) -> dict[str, str]:
    blocker = project.root / "a-file"
    blocker.write_text("not a directory")
    return {"TRADEUL_MAINT_LOG_DIR": str(blocker / "logs"), "TRADEUL_MAINT_STATE_DIR": str(blocker / "state")}


CASES = [
    # --- dates and times: usage errors (2) ---
    Case("--date not a date", ("run", "--date", "2026-13-01"), 2, ("--date", "2026-13-01")),
    Case("--date a word", ("run", "--date", "yesterday"), 2, ("--date", "yesterday")),
    Case("--date a weekend", ("run", "--date", "2026-11-28", "--now", NOW), 2, ("2026-11-28", "not")),
    Case("--date a holiday", ("run", "--date", "2026-11-26", "--now", NOW), 2, ("2026-11-26", "not")),
    Case("--date in the future", ("run", "--date", "2026-12-15", "--now", NOW), 2, ("2026-12-15", "future")),
    Case("--date before the calendar", ("run", "--date", "1990-01-02", "--now", NOW), 2, ("1990-01-02", "outside")),
    Case("status --date a weekend", ("status", "--date", "2026-11-29", "--now", NOW), 2, ("2026-11-29",)),
    Case("recover --since not a date", ("recover", "--since", "2026-02-30", "--now", NOW), 2, ("--since",)),
    Case("recover --since before the calendar's first session", ("recover", "--since", "1900-01-01", "--now", NOW),
         2, ("1900-01-01",)),
    Case("recover --until without --since", ("recover", "--until", "2026-11-20", "--now", NOW), 2, ("--since",)),
    Case("recover --since after --until", ("recover", "--since", "2026-11-20", "--until", "2026-11-10", "--now", NOW),
         2, ("--since", "--until")),
    Case("--now unparseable", ("run", "--now", "half past five"), 2, ("--now",)),
    Case("--now empty", ("run", "--date", DAY, "--now", ""), 2, ("--now",)),
    Case("--now at the end of time", ("status", "--now", "9999-12-31T23:59"), 2, ("--now",)),
    Case("TRADEUL_MAINT_NOW unparseable", ("run",), 2, ("TRADEUL_MAINT_NOW",), env={"TRADEUL_MAINT_NOW": "garbage"}),
    Case("--task without --date", ("run", "--task", "a"), 2, ("--task", "--date")),
    Case("--task unknown", ("run", "--date", DAY, "--task", "zzz", "--now", NOW), 2, ("zzz",)),
    Case("--lookback 0", ("status", "--lookback", "0"), 2, ("--lookback",)),
    # --- configuration errors (78): every class config/settings.py knows ---
    Case("config not TOML", ("run", "--date", DAY), 78, ("TOML",), config="[schedule\n"),
    Case("config file missing", ("run", "--date", DAY), 78, ("does not exist",),
         env={"TRADEUL_MAINT_CONFIG": "/nonexistent/maint.toml"}),
    config("unknown top-level key", "colour = 1\n", "unknown key", "colour"),
    config("unknown key in a table", "[schedule]\nwindow = \"17:00\"\n", "unknown key", "window"),
    config("no tasks", "", "no tasks", tasks=""),
    config("duplicate task", "", "duplicate", "a", tasks=TASKS + '[[tasks]]\nname = "a"\ncommand = ["true"]\n'),
    config("unknown dependency", "", "unknown task", "nope",
           tasks='[[tasks]]\nname = "a"\ncommand = ["true"]\nafter = ["nope"]\n'),
    config("dependency cycle", "", "cycle", tasks='[[tasks]]\nname = "a"\ncommand = ["true"]\nafter = ["b"]\n'
                              '[[tasks]]\nname = "b"\ncommand = ["true"]\nafter = ["a"]\n'),
    config("two kinds in one task", "", "exactly one",
           tasks='[[tasks]]\nname = "a"\ncommand = ["true"]\npython = "m:f"\n'),
    config("bad task name", "", "name", tasks='[[tasks]]\nname = "Bad Name"\ncommand = ["true"]\n'),
    config("max_parallel 0", "[run]\nmax_parallel = 0\n", "max_parallel"),
    config("negative lease", "[redis]\nlock_lease_seconds = -1\n", "lock_lease_seconds"),
    config("status TTL shorter than the lookback", "[redis]\nstatus_ttl_days = 2\n", "status_ttl_days"),
    config("bad rotation size", "[logging]\nrotation = \"10 parsecs\"\n", "rotation"),
    config("unknown log level", "[logging]\nlevel = \"LOUD\"\n", "level"),
    config("window start not a time", "[schedule]\nwindow_start = \"25:00\"\n", "window_start"),
    config("window of 0 minutes", "[schedule]\nwindow_minutes = 0\n", "window_minutes"),
    config("window past midnight of the next day", "[schedule]\nwindow_start = \"close+25h\"\n", "window_start",
           "24 hours"),
    config("unknown calendar code", "[schedule]\ncalendar = \"XXXX\"\n", "XXXX", "calendar"),
    config("early close on a non-session", "[calendar]\nearly_closes = { 2026-11-28 = \"13:00\" }\n", "2026-11-28",
           "early_closes"),
    config("closed and early close", "[calendar]\nclosed = [2026-11-25]\nearly_closes = { 2026-11-25 = \"13:00\" }\n",
           "2026-11-25"),
    config("delete pattern over the tool's keys", "", "patterns", "maintenance",
           tasks='[[tasks]]\nname = "wipe"\nbuiltin = "redis.delete_keys"\n'
                                                'params = { patterns = ["maintenance:*"] }\n'),
    Case("log and state directories not writable", ("run", "--date", DAY, "--now", NOW), 78, ("logs",),
         setup=unwritable),
    # --- tasks that cannot run (the preflight `check` reports them) ---
    Case("python task that does not import", ("check",), 1, ("nosuchmodule",), stream="check",
         config=BASE + '[[tasks]]\nname = "p"\npython = "nosuchmodule:run"\n'),
    Case("command whose program does not exist", ("check",), 1, ("no-such-program",), stream="check",
         config=BASE + '[[tasks]]\nname = "c"\ncommand = ["/usr/bin/no-such-program", "{date}"]\n'),
    # --- Redis endpoints and credentials ---
    Case("wrong password", ("run", "--date", DAY, "--now", NOW), 78, ("credentials",), secrets=("wrong-" + SECRET,),
         setup=url_env(lambda s: f"redis://:wrong-{SECRET}@127.0.0.1:{s['auth_port']}/0")),
    Case("URL not a Redis (HTTP server)", ("run", "--date", DAY, "--now", NOW), 78, ("Redis",),
         setup=url_env(lambda s: f"redis://127.0.0.1:{s['http_port']}/0")),
    Case("URL database that does not exist", ("run", "--date", DAY, "--now", NOW), 78, ("99",),
         setup=url_env(lambda s: f"redis://127.0.0.1:{s['open_port']}/99")),
    Case("URL database not a number", ("run", "--date", DAY, "--now", NOW), 78, ("notadb",),
         setup=url_env(lambda s: f"redis://127.0.0.1:{s['open_port']}/notadb")),
    Case("URL unknown scheme", ("run", "--date", DAY, "--now", NOW), 78, ("redis://",),
         env={"TRADEUL_MAINT_REDIS_URL": f"http://user:{SECRET}@127.0.0.1:6379/0"}, secrets=(SECRET,)),
    Case("URL password with / unencoded", ("run", "--date", DAY, "--now", NOW), 78, ("percent",),
         setup=url_env(lambda s: f"redis://u:AAA{SECRET}/BBB@127.0.0.1:{s['auth_port']}/0"),
         secrets=(SECRET, "AAA", "BBB")),
    Case("URL password with # unencoded", ("run", "--date", DAY, "--now", NOW), 78, ("percent",),
         setup=url_env(lambda s: f"redis://:AAA{SECRET}#BBB@127.0.0.1:{s['auth_port']}/0"),
         secrets=(SECRET, "AAA", "BBB")),
    Case("URL password with ? and @ unencoded", ("run", "--date", DAY, "--now", NOW), 78, ("percent",),
         setup=url_env(lambda s: f"redis://:AA?{SECRET}@BB@127.0.0.1:{s['auth_port']}/0"),
         secrets=(SECRET,)),
    Case("sentinel URL password with / unencoded", ("run", "--date", DAY, "--now", NOW), 78, ("percent",),
         setup=url_env(lambda s: f"redis+sentinel://:{SECRET}/x@127.0.0.1:{s['auth_port']}/mymaster"),
         secrets=(SECRET,)),
    # --- keys of the tool's that hold the wrong type (another application on the prefix): 78 ---
    Case("hash at the lock", ("run", "--date", DAY, "--now", NOW), 78, ("maintenance:lock", "key_prefix"),
         setup=put("maintenance:lock", "hash")),
    Case("hash at the lock, status", ("status", "--now", NOW), 78, ("maintenance:lock", "key_prefix"),
         setup=put("maintenance:lock", "hash")),
    Case("hash at last_run", ("run", "--date", DAY, "--now", NOW), 78, ("maintenance:last_run", "key_prefix"),
         setup=put("maintenance:last_run", "hash")),
    Case("hash at executed", ("run", "--date", DAY, "--now", NOW), 78, (f"maintenance:executed:{DAY}",),
         setup=put(f"maintenance:executed:{DAY}", "hash")),
    # --- a lock the tool did not write: reported, never waited on silently (75) ---
    Case("foreign lock, cron tick", ("run", "--now", "2026-11-25T17:05"), 75, ("maintenance:lock",),
         setup=put("maintenance:lock", "string", "held-by-someone-else")),
    Case("foreign lock, manual run", ("run", "--date", DAY, "--now", NOW), 75, ("maintenance:lock",),
         setup=put("maintenance:lock", "string", "held-by-someone-else")),
    # --- status documents of the wrong shape: corrupt, shown as such (status --check exits 1) ---
    shape("task_details a list", '{"date":"D","task_details":[1]}'),
    shape("task_details a string", '{"date":"D","task_details":"x"}'),
    shape("output a list", '{"date":"D","started_at":"2026-11-25T22:00:00+00:00",'
          '"completed_at":"2026-11-25T22:01:00+00:00",'
          '"all_success":true,"tasks":{"a":"completed","b":"completed"},"task_details":{"a":{"output":["a"]}}}'),
    shape("duration_seconds a word", '{"date":"D","started_at":"2026-11-25T22:00:00+00:00",'
          '"completed_at":"2026-11-25T22:01:00+00:00",'
          '"all_success":true,"tasks":{"a":"completed","b":"completed"},"duration_seconds":"slow"}'),
    shape("tasks a list", '{"date":"D","tasks":["a","b"]}'),
    shape("attempts a word", '{"date":"D","attempts":"many","started_at":"2026-11-25T22:00:00+00:00"}'),
    shape("started_at a number", '{"date":"D","started_at":5}'),
    shape("a list", '[1, 2, 3]'),
    shape("not JSON", 'not json at all'),
    # --- issue 19: what others wrote, parsed by one safe reader; URLs, Sentinels, password files, ping URLs ---
    shape("duration_seconds NaN", '{"date":"D","started_at":"2026-11-25T22:00:00+00:00",'
          '"completed_at":"2026-11-25T22:01:00+00:00","all_success":true,"tasks":{"a":"completed","b":"completed"},'
          '"duration_seconds":NaN}'),
    shape("duration_seconds 1e999", '{"date":"D","duration_seconds":1e999}'),
    Case("status document nested 200,000 deep", ("status", "--check", "--now", AFTER), 1, ("corrupt", DAY),
         setup=put(f"maintenance:status:{DAY}", "string", '{"date":"%s","task_details":%s}' % (DAY, "[" * 200_000)),
         stream="stdout"),
    Case("lock value nested 200,000 deep", ("run", "--date", DAY, "--now", NOW), 75, ("maintenance:lock",),
         setup=put("maintenance:lock", "string", "[" * 200_000, expire=True)),
    Case("log line nested 200,000 deep", ("logs",), 0, ("[[[[",), stream="stdout",
         setup=writes(lambda project: project.log_dir / "maintenance.log", "[" * 200_000 + "\n")),
    Case("calendar cache nested 200,000 deep (rebuilt)", ("status", "--check", "--now", AFTER), 1, ("NOT OK",),
         stream="stdout", setup=writes(lambda project: project.state_dir / "cache" / cache_name(
             "XNYS", library_version()), "[" * 200_000)),
    Case("URL with an IPv6 bracket left open", ("run", "--date", DAY, "--now", NOW), 78, ("IPv6",),
         env={"TRADEUL_MAINT_REDIS_URL": f"redis://:{SECRET}@[::1:16391/1"}, secrets=(SECRET,)),
    Case("URL port not a number", ("run", "--date", DAY, "--now", NOW), 78, ("port",),
         env={"TRADEUL_MAINT_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:63a9/0"}, secrets=(SECRET,)),
    Case("sentinel URL at a plain Redis", ("run", "--date", DAY, "--now", NOW), 78, ("not a Sentinel",),
         setup=url_env(lambda s: f"redis+sentinel://127.0.0.1:{s['open_port']}/mymaster")),
    Case("wrong Sentinel password", ("run", "--date", DAY, "--now", NOW), 78, ("Sentinel", "credentials"),
         setup=url_env(lambda s: f"redis+sentinel://:wrong-{SECRET}@127.0.0.1:{s['sentinel_port']}/mymaster"),
         secrets=("wrong-" + SECRET, "Connection(", "Retry")),
    Case("Sentinel service nobody monitors", ("run", "--date", DAY, "--now", NOW), 78, ("nosuchservice",),
         setup=url_env(lambda s: f"redis+sentinel://:right-password@127.0.0.1:{s['sentinel_port']}/nosuchservice")),
    Case("password file /dev/zero", ("run", "--date", DAY, "--now", NOW), 78, ("/dev/zero", "regular file"),
         setup=password_file(lambda project: Path("/dev/zero"))),
    Case("password file a FIFO nobody writes", ("run", "--date", DAY, "--now", NOW), 78, ("regular file",),
         setup=password_file(lambda project: fifo(project.root / "password.fifo"))),
    Case("password file of 1 MB", ("run", "--date", DAY, "--now", NOW), 78, ("larger",),
         setup=password_file(lambda project: write_file(project.root / "big", "x" * 2**20))),
    config("ping_url with a blank", '[notify]\nping_url = "https://hc.example/ping/s3cr3t uuid"\n', "ping_url",
           "percent-encode"),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """For the URL cases: a redis-server that requires a password and one that does not (TCP ports),
    and an HTTP server."""
    auth, auth_url = start_redis(tmp_path_factory.mktemp("auth-redis"), "--requirepass", "right-password", tcp=True)
    open_, open_url = start_redis(tmp_path_factory.mktemp("open-redis"), tcp=True)
    http = HttpErrorServer()
    port = lambda url: url.rsplit(":", 1)[1].split("/")[0]  # noqa: E731
    sentinel, sentinel_port = start_sentinel(tmp_path_factory.mktemp("sentinel"), int(port(auth_url)),
                                             "right-password")
    yield {"auth_port": port(auth_url), "open_port": port(open_url), "http_port": http.port,
           "sentinel_port": sentinel_port}
    http.close()
    for proc in (auth, open_, sentinel):
        proc.terminate()
        proc.wait(10)


def test_the_matrix_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, project: Project, r: redis.Redis, servers):
    project.write_config(case.config)
    env = dict(case.env)
    if case.setup is not None:
        env.update(case.setup(project, r, servers) or {})
    before = snapshot(r)
    result = project.run(*case.args, timeout=60, **env)
    after = snapshot(r)
    shown = f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == case.code, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    if case.stream == "check":  # one line per check: exactly one of them fails, naming the problem
        lines = [line for line in result.stdout.splitlines() if line.lstrip().startswith("✗")]
    else:
        lines = [line for line in getattr(result, case.stream).splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on {case.stream}; {shown}"
    for word in case.names:
        assert word.lower() in lines[0].lower(), f"the line does not name {word!r}: {lines[0]!r}"
    if case.stream != "stderr":
        assert not result.stderr.strip(), shown
    logs = "".join(p.read_text(errors="replace") for d in (project.log_dir, project.state_dir / "logs")
                   if d.is_dir() for p in d.iterdir() if p.is_file())
    for secret in case.secrets:
        assert secret not in result.stdout + result.stderr + logs, f"{secret!r} shown: {shown}"
    assert before == after, f"Redis changed: before {before}, after {after}"
