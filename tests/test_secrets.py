"""Secrets a task prints never reach a log file, the status document, a command's output, a ping or a metric.

The corpus (bench/secrets_corpus.py) has each format issue 19 names: the tool's own Redis
password bare and percent-encoded, redis-cli -a, --password, AUTH, bearer tokens, AWS keys,
NAME=value, URL user information with a blank, and token formats with a fixed prefix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import redis

from conftest import serve_redis
from test_notify import endpoint  # noqa: F401  (a fixture: a loopback endpoint recording every ping)
from tradeul_maint.base.redact import remember, remember_url, scrub
from tradeul_maint.base.logfile import ERRORS_LOG, MAIN_LOG

DAY = "2026-11-25"
NOW = "2026-11-26T12:00"
SECRETS = {  # what the task prints -> the value that must not appear
    "REDIS_PASSWORD=S1xq": "S1xq",
    "DB_PASSWORD: S2xq": "S2xq",
    "PGPASSWORD=S3xq": "S3xq",
    "MYSQL_PWD=S4xq": "S4xq",
    "api-key=S5xq": "S5xq",
    "X_TOKEN: S6xq": "S6xq",
    "export aws.Secret.Access.Key='S7xq wide'": "S7xq",
    'settings {"db_passwd": "S8xq", "ApiKey": "S9xq"}': "S8xq",
    "url redis://svc:S0xq/with/slashes@cache:6379/0": "S0xq",
}


@pytest.mark.parametrize("line, hidden", [
    ("REDIS_PASSWORD=S1", "REDIS_PASSWORD=***"),
    ("DB_PASSWORD: S2", "DB_PASSWORD: ***"),
    ("PGPASSWORD=S3", "PGPASSWORD=***"),
    ("MYSQL_PWD=S4", "MYSQL_PWD=***"),
    ("api-key=abc", "api-key=***"),
    ("API.KEY = abc", "API.KEY = ***"),
    ("apikey=abc", "apikey=***"),
    ("X_TOKEN: abc", "X_TOKEN: ***"),
    ("client_secret=abc&scope=x", "client_secret=***&scope=x"),
    ('SECRET="a b c" next', 'SECRET="***" next'),
    ("password:\nnext line", "password:\nnext line"),
    ("a password is needed", "a password is needed"),
    ("REDIS_PASSWORD=S1\nDB_PASSWORD: S2\ndone", "REDIS_PASSWORD=***\nDB_PASSWORD: ***\ndone"),
])
def test_scrub_hides_the_value_of_any_secret_named_pair(line, hidden):
    assert scrub(line) == hidden


def test_secrets_a_failing_task_prints_reach_no_log_no_status_and_no_status_output(project, r):
    script = project.root / "leaky.py"
    script.write_text("import sys\n" + "".join(f"print({line!r})\n" for line in SECRETS)
                      + "print('bye', file=sys.stderr)\nsys.exit(2)\n")
    project.write_config(f"""
        [[tasks]]
        name = "leaky"
        command = ['{sys.executable}', '{script}']
    """)
    run = project.cli("run", "--date", DAY, "--now", NOW)
    assert run.exit_code == 1
    status = project.cli("status", "--date", DAY, "--now", NOW)
    status_json = project.cli("status", "--date", DAY, "--now", NOW, "--json")
    logs = project.cli("logs", "--errors", "-n", "100")
    places = {
        MAIN_LOG: (project.log_dir / MAIN_LOG).read_text(),
        ERRORS_LOG: (project.log_dir / ERRORS_LOG).read_text(),
        "status document": r.get(f"maintenance:status:{DAY}"),
        "status --date": status.output,
        "status --date --json": status_json.output,
        "logs --errors": logs.output,
        "run output": run.output,
    }
    for place, text in places.items():
        for hidden in SECRETS.values():
            assert hidden not in text, f"{hidden} in the {place}"
    # The output is there, names and all: only the values went.
    output = json.loads(places["status document"])["task_details"]["leaky"]["output"]
    assert "REDIS_PASSWORD=***\nDB_PASSWORD: ***\nPGPASSWORD=***\nMYSQL_PWD=***\napi-key=***\nX_TOKEN: ***\n" in output
    assert "redis://***@cache:6379/0" in output and "bye" in output
    [failed] = [json.loads(line) for line in places[ERRORS_LOG].splitlines() if '"task_failed"' in line]
    assert "REDIS_PASSWORD=***\nDB_PASSWORD: ***\n" in failed["output"]


# --- the corpus: every format, from a command task and a Python task, in every place output goes ---------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from secrets_corpus import CORPUS, LIVE_ENCODED, LIVE_PASSWORD  # noqa: E402  (bench/secrets_corpus.py)

LEAKY_COMMAND = """\
import sys
for line in {lines!r}:
    print(line)
sys.exit(2)
"""
LEAKY_PYTHON = """\
def run(ctx):
    lines = {lines!r}
    for line in lines:
        print(line)
    ctx.logger.bind(detail="\\n".join(lines)).warning("leaky_lines")
    ctx.report(**{{f"line{{i}}": line for i, line in enumerate(lines)}})
    raise RuntimeError("\\n".join(lines))
"""


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory):
    """A redis-server whose password is the corpus's live one (a blank, a slash, a '#')."""
    yield from serve_redis(tmp_path_factory.mktemp("guarded"), "--requirepass", LIVE_PASSWORD, tcp=True)


@pytest.mark.parametrize("source", ["password file", "URL"])
def test_no_secret_of_the_corpus_reaches_any_place_output_goes(project, guarded_redis, endpoint, source):
    ping_url, pings = endpoint
    lines = [line for line, _ in CORPUS.values()]
    (project.root / "leaky_cmd.py").write_text(LEAKY_COMMAND.format(lines=lines))
    (project.root / "leaky_py.py").write_text(LEAKY_PYTHON.format(lines=lines))
    textfile = project.root / "metrics" / "tradeul_maint.prom"
    textfile.parent.mkdir()
    project.write_config(f"""
        [notify]
        ping_url = "{ping_url}"
        [metrics]
        textfile = "{textfile}"
        [[tasks]]
        name = "cmd"
        command = ['{sys.executable}', '{project.root / "leaky_cmd.py"}']
        [[tasks]]
        name = "py"
        python = "leaky_py:run"
        [[tasks]]
        name = "probed"
        wait_for = ['{sys.executable}', '{project.root / "leaky_cmd.py"}']
        command = ["true"]
    """)
    password_file = project.root / "redis-password"
    password_file.write_text(LIVE_PASSWORD + "\n")
    env = {"TRADEUL_MAINT_REDIS_URL": guarded_redis.replace("redis://", f"redis://:{LIVE_ENCODED}@")} \
        if source == "URL" else {"TRADEUL_MAINT_REDIS_URL": guarded_redis,
                                 "TRADEUL_MAINT_REDIS_PASSWORD_FILE": str(password_file)}
    run = project.cli("run", "--date", DAY, "--now", NOW, **env)
    assert run.exit_code == 1, run.output
    client = redis.Redis.from_url(guarded_redis, password=LIVE_PASSWORD, decode_responses=True)
    commands = {args: project.cli(*args, **env).output for args in (
        ("status", "--date", DAY, "--now", NOW), ("status", "--date", DAY, "--json", "--now", NOW),
        ("status", "--json", "--now", NOW), ("status", "--now", NOW), ("logs", "-n", "1000"),
        ("logs", "--json", "-n", "1000"), ("logs", "--errors", "-n", "1000"))}
    places = {
        MAIN_LOG: (project.log_dir / MAIN_LOG).read_text(),
        ERRORS_LOG: (project.log_dir / ERRORS_LOG).read_text(),
        "status document": client.get(f"maintenance:status:{DAY}"),
        "pings": "\n".join(f"{path} {body}" for _, path, body in pings),
        "metrics textfile": textfile.read_text(),
        "run output": run.output,
        **{" ".join(args): output for args, output in commands.items()},
    }
    client.close()
    leaks = [f"{name} in {place}" for place, text in places.items()
             for name, (_, hidden) in CORPUS.items() if hidden in text]
    leaks += [f"the ping path in {place}" for place, text in places.items() if place != "pings" and "5f0c2a9e" in text]
    assert not leaks, leaks
    # What was around the secrets is all there: the lines, only their secrets hidden.
    details = json.loads(places["status document"])["task_details"]
    assert details["cmd"]["output"].count("***") >= len(CORPUS) and "pg_dump --password ***" in details["cmd"]["output"]
    assert "RuntimeError" in details["py"]["error"] and "+ redis-cli -h cache -a ***" in details["py"]["output"]
    # A wait_for probe's output, kept when its wait ended (the session's window has passed): scrubbed as a task's.
    assert details["probed"]["error"].startswith("still waiting for data after ") and \
        details["probed"]["output"].count("***") >= len(CORPUS)
    assert "/ping/5f0c2a9e/fail" in places["pings"] and "py failed: RuntimeError: config dump" in places["pings"]


def test_the_tool_remembers_its_password_in_every_form_it_travels_in():
    remember_url(f"redis://user:{LIVE_ENCODED}@host:6379/0")
    for form in (LIVE_PASSWORD, LIVE_ENCODED, LIVE_ENCODED.replace("%2F", "%2f"), json.dumps(LIVE_PASSWORD)[1:-1],
                 LIVE_PASSWORD.replace(" ", "+").replace("/", "%2F").replace("#", "%23")):
        assert scrub(f"<{form}>") == "<***>", form
    remember("pw1")  # short: removed only where it stands alone, not inside other words
    assert scrub("pw1 pw12 apw1 (pw1)") == "*** pw12 apw1 (***)"


@pytest.mark.parametrize("url, shown", [
    ("redis://:two words@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
    ("redis://app:two words@db:6379/0 then redis://b:x@h2/1", "redis://***@db:6379/0 then redis://b:***@h2/1"),
    ("rediss://u:a b@c@d:6380", "rediss://***@d:6380"),
    ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ("see redis://cache:6379/0, it works", "see redis://cache:6379/0, it works"),
])
def test_a_urls_user_information_is_hidden_up_to_the_last_at_before_the_host_blanks_and_all(url, shown):
    assert scrub(url) == shown


@pytest.fixture(scope="module")
def blank_password_redis(tmp_path_factory):
    for url in serve_redis(tmp_path_factory.mktemp("blank"), "--requirepass", "two words", tcp=True):
        yield url.replace("redis://", "redis://:two words@")


def test_a_working_url_whose_password_has_a_blank_is_never_shown(project, blank_password_redis):
    project.write_config('[[tasks]]\nname = "a"\ncommand = ["true"]\n')
    env = {"TRADEUL_MAINT_REDIS_URL": blank_password_redis}
    outputs = {args: project.cli(*args, **env) for args in (("status",), ("status", "--json"), ("check",),
                                                            ("check", "--json"))}
    for args, result in outputs.items():
        assert result.exit_code == 0, (args, result.output)
        assert "words" not in result.output + result.stderr, args
    assert "Redis redis://***@127.0.0.1:" in outputs[("check",)].output


def test_a_python_task_that_replaces_the_log_patcher_still_logs_no_secret(project):
    """The log files scrub a line once, as loguru makes its record (the patcher); a task's own code may replace
    the patcher in its process, and its lines are then scrubbed as they are written."""
    (project.root / "unpatched.py").write_text(
        "from loguru import logger\n\n\ndef run(ctx):\n    logger.configure(patcher=lambda record: None)\n"
        f"    ctx.logger.bind(detail={list(SECRETS)!r}).warning('PGPASSWORD=S3xq in the message')\n")
    project.write_config('[[tasks]]\nname = "t"\npython = "unpatched:run"\n')
    assert project.cli("run", "--date", DAY, "--now", NOW).exit_code == 0
    text = (project.log_dir / MAIN_LOG).read_text()
    assert "PGPASSWORD=***" in text and "REDIS_PASSWORD=***" in text
    assert [hidden for hidden in SECRETS.values() if hidden in text] == []
