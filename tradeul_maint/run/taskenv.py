"""What a task's process finds in its environment: none of the tool's secrets, unless the task asks.

The tool's Redis URL carries its password (a Kubernetes CronJob passes it from a Secret
as TRADEUL_MAINT_REDIS_URL), and the password file's path leads to it. A task inherits
the tool's environment otherwise, and tasks print their environment more often than one
would think (an `env` dump when debugging, a failing tool echoing its config). So every
task's environment is the tool's without TRADEUL_MAINT_REDIS_URL, without
TRADEUL_MAINT_REDIS_PASSWORD_FILE, and without REDIS_URL when it holds the tool's URL
(where the tool took its URL from). A task with `redis_env = true` gets
TRADEUL_MAINT_REDIS_URL: a URL that works, its password included (read from the password
file when there is one); for the embedded Redis, `unix://<its socket>`. Python tasks have a
client on their context and need none of this.

This keeps secrets out of what tasks print, not away from the tasks: a task runs as the
tool's user and can read what that user can (the password file, the tool's own /proc
entries). Run the tool as a user of its own to keep them apart.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tradeul_maint.base import envvars



def confine(environ: MutableMapping[str, str], redis_env: bool, redis: dict[str, Any] | None) -> None:
    """In a task's process, before its command is exec'd or its callable called: the task's environment.

    `redis` is where the run's Redis is, as the runner told its supervisor:
    `{"unix_socket": ...}` or `{"url": ..., "password_file": ...}`.
    """
    redis = redis or {}
    tool_url = redis.get("url")
    for name in (envvars.REDIS_URL, envvars.REDIS_PASSWORD_FILE):
        environ.pop(name, None)
    if tool_url and environ.get(envvars.GENERIC_REDIS_URL) == tool_url:
        del environ[envvars.GENERIC_REDIS_URL]
    if redis_env and redis:
        try:
            environ[envvars.REDIS_URL] = working_url(redis)
        except Exception as exc:  # the password file went away since the run began: the task runs without it
            sys.stderr.write(f"tradeul-maint: {envvars.REDIS_URL} not set for this task (redis_env): {exc}\n")


def working_url(redis: dict[str, Any]) -> str:
    """A URL on the run's Redis with its password: the one the tool was given, the password file's put in."""
    if redis.get("unix_socket"):
        return f"unix://{redis['unix_socket']}"
    url = redis["url"]
    if not redis.get("password_file"):
        return url
    from tradeul_maint.redisio.connection import read_password

    password = quote(read_password(Path(redis["password_file"])), safe="")
    scheme, _, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    user = userinfo.partition(":")[0] if at else ""
    return f"{scheme}://{user}:{password}@{hosts}"
