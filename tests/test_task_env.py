"""A task's environment carries none of the tool's secrets, unless the task sets `redis_env = true`.

Through the CLI against a real redis-server with a password: a command task and a Python
task each write down the environment they found; a `redis_env` task uses the URL it gets.
"""

from __future__ import annotations

import json
import sys

import pytest
import redis

from conftest import serve_redis
from tradeul_maint.taskenv import confine, working_url

DAY = "2026-11-25"
NOW = "2026-11-26T12:00"
PASSWORD = "t4sk env/pw"
SECRET_VARS = ("TRADEUL_MAINT_REDIS_URL", "TRADEUL_MAINT_REDIS_PASSWORD_FILE", "REDIS_URL")

DUMP_COMMAND = """\
import json, os, sys
json.dump(dict(os.environ), open(sys.argv[1], "w"))
"""
DUMP_PYTHON = """\
import json, os

def run(ctx):
    json.dump(dict(os.environ), open(ctx.params["to"], "w"))
"""
USE_URL = """\
import os, sys, redis
client = redis.Redis.from_url(os.environ["TRADEUL_MAINT_REDIS_URL"])
client.set("written-by-the-task", sys.argv[1])
"""


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    yield from serve_redis(tmp_path_factory.mktemp("guarded"), "--requirepass", PASSWORD, tcp=True)


@pytest.fixture
def guarded(guarded_server):
    """The URL (without its password) of a redis-server with one, emptied."""
    client = redis.Redis.from_url(guarded_server, password=PASSWORD)
    client.flushall()
    client.close()
    return guarded_server


def write_tasks(project, redis_env: bool = False) -> None:
    (project.root / "dump_cmd.py").write_text(DUMP_COMMAND)
    (project.root / "dump_py.py").write_text(DUMP_PYTHON)
    flag = "redis_env = true\n" if redis_env else ""
    project.write_config(f"""
        [[tasks]]
        name = "cmd"
        command = ['{sys.executable}', '{project.root / "dump_cmd.py"}', '{project.root / "cmd.json"}']
        {flag}
        [[tasks]]
        name = "py"
        python = "dump_py:run"
        params = {{ to = "{project.root / "py.json"}" }}
        [[tasks]]
        name = "probed"
        wait_for = ['{sys.executable}', '{project.root / "dump_cmd.py"}', '{project.root / "probe.json"}']
        command = ["true"]
    """)


def tool_env(project, url: str) -> dict[str, str]:
    password_file = project.root / "password"
    password_file.write_text(PASSWORD + "\n")
    return {"TRADEUL_MAINT_REDIS_URL": url, "TRADEUL_MAINT_REDIS_PASSWORD_FILE": str(password_file), "REDIS_URL": url}


def test_by_default_no_task_sees_the_tools_url_password_file_or_redis_url(project, guarded):
    write_tasks(project)
    result = project.cli("run", "--date", DAY, "--now", NOW, **tool_env(project, guarded))
    assert result.exit_code == 0, result.output
    for dump in ("cmd.json", "py.json", "probe.json"):  # a wait_for probe is a task process too
        env = json.loads((project.root / dump).read_text())
        assert not [name for name in SECRET_VARS if name in env], dump
        assert PASSWORD not in json.dumps(env) and env["PATH"]  # the rest of the environment is there
    assert json.loads((project.root / "cmd.json").read_text())["TRADEUL_MAINT_TASK"] == "cmd"


def test_a_redis_url_that_is_not_the_tools_stays(project, guarded):
    write_tasks(project)
    env = {**tool_env(project, guarded), "REDIS_URL": "redis://the-apps-own-redis:6379/2"}
    assert project.cli("run", "--date", DAY, "--now", NOW, **env).exit_code == 0
    assert json.loads((project.root / "cmd.json").read_text())["REDIS_URL"] == "redis://the-apps-own-redis:6379/2"


def test_a_redis_env_task_gets_a_working_url_with_the_password_from_the_file(project, guarded):
    (project.root / "use_url.py").write_text(USE_URL)
    project.write_config(f"""
        [[tasks]]
        name = "export"
        command = ['{sys.executable}', '{project.root / "use_url.py"}', '{{date}}']
        redis_env = true
    """)
    result = project.cli("run", "--date", DAY, "--now", NOW, **tool_env(project, guarded))
    assert result.exit_code == 0, result.output
    client = redis.Redis.from_url(guarded, password=PASSWORD, decode_responses=True)
    assert client.get("written-by-the-task") == DAY
    client.close()


def test_redis_env_must_be_true_or_false(project):
    project.write_config('[[tasks]]\nname = "a"\ncommand = ["true"]\nredis_env = "yes"\n')
    result = project.cli("run", "--date", DAY, "--now", NOW)
    assert result.exit_code == 78 and "redis_env" in result.stderr


@pytest.mark.parametrize("target, url", [
    ({"unix_socket": "/state/redis/redis.sock"}, "unix:///state/redis/redis.sock"),  # the embedded Redis
    ({"url": "redis://u:p%40ss@h:6379/0"}, "redis://u:p%40ss@h:6379/0"),
    ({"url": "redis+sentinel://h1:26379,h2:26379/main/2", "password_file": "PW"},
     "redis+sentinel://:s%2F3%40cret@h1:26379,h2:26379/main/2"),
    ({"url": "rediss://svc@h:6380/1", "password_file": "PW"}, "rediss://svc:s%2F3%40cret@h:6380/1"),
])
def test_the_working_url_puts_the_password_files_password_in(tmp_path, target, url):
    (tmp_path / "pw").write_text("s/3@cret\n")
    if target.get("password_file"):
        target = {**target, "password_file": str(tmp_path / "pw")}
    assert working_url(target) == url


def test_confine_keeps_everything_but_the_tools_secrets():
    environ = {"PATH": "/bin", "TRADEUL_MAINT_REDIS_URL": "redis://:pw@h/0", "REDIS_URL": "redis://:pw@h/0",
               "TRADEUL_MAINT_REDIS_PASSWORD_FILE": "/run/secrets/pw", "TRADEUL_MAINT_DATE": DAY}
    confine(environ, False, {"url": "redis://:pw@h/0"})
    assert environ == {"PATH": "/bin", "TRADEUL_MAINT_DATE": DAY}
