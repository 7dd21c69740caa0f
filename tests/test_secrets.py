"""Secrets a task prints never reach a log file, the status document or `status --date`."""

from __future__ import annotations

import json
import sys

import pytest

from tradeul_maint.logs import ERRORS_LOG, MAIN_LOG
from tradeul_maint.redact import scrub

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
