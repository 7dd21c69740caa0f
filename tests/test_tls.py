"""Redis over TLS (`rediss://` with a CA and client certificates), ACL users, and the password file.

The bundled redis-server is built without TLS, so the TLS tests put a TLS-terminating proxy
on loopback in front of it: Python's ssl module, certificates from trustme, one relay
thread per direction per connection, optionally requiring a client certificate.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import trustme

from conftest import count_runs, marker_tasks, start_redis, wait_for

DAY = "2026-11-25"


class TlsProxy:
    """Accepts TLS on a loopback port and relays the plain bytes to a Redis unix socket."""

    def __init__(self, upstream: str, server_context: ssl.SSLContext):
        self.upstream = upstream
        self.context = server_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        tls.settimeout(None)
        plain = socket.socket(socket.AF_UNIX)
        plain.connect(self.upstream)
        back = threading.Thread(target=_pump, args=(plain, tls), daemon=True)
        back.start()
        _pump(tls, plain)
        back.join(10)
        plain.close()
        tls.close()

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 from it, a client certificate from it, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("tradeul-maint@example.com")
    files = {"ca": directory / "ca.pem", "other_ca": directory / "other-ca.pem",
             "server": directory / "server.pem", "client_cert": directory / "client.pem",
             "client_key": directory / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    other.cert_pem.write_to_path(str(files["other_ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


@pytest.fixture
def tls_redis(redis_url, pki):
    """(proxy port, whether it requires a client certificate) -> a TLS front for the test Redis."""
    proxies = []

    def start(require_client_cert: bool = False) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki["server"])
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(pki["ca"])
        proxy = TlsProxy(redis_url.removeprefix("unix://"), context)
        proxies.append(proxy)
        return proxy.port

    yield start
    for proxy in proxies:
        proxy.close()


def tls_url(port: int, **options: Path) -> str:
    query = "&".join(f"{name}={quote(str(path))}" for name, path in options.items())
    return f"rediss://127.0.0.1:{port}/0" + (f"?{query}" if query else "")


def test_rediss_with_the_servers_ca_runs_and_records_the_state(project, r, tls_redis, pki):
    port = tls_redis()
    project.write_config(marker_tasks(project.root, ["a", "b"]))
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=tls_url(port, ssl_ca_certs=pki["ca"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["all_success"] is True
    status = project.run("status", "--date", DAY, TRADEUL_MAINT_REDIS_URL=tls_url(port, ssl_ca_certs=pki["ca"]))
    assert status.returncode == 0 and "done" in status.stdout


def test_a_client_certificate_in_the_url_is_presented(project, r, tls_redis, pki):
    port = tls_redis(require_client_cert=True)
    project.write_config(marker_tasks(project.root, ["a"]))
    url = tls_url(port, ssl_ca_certs=pki["ca"], ssl_certfile=pki["client_cert"], ssl_keyfile=pki["client_key"])
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
    assert result.returncode == 0, result.stderr
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["all_success"] is True


@pytest.mark.parametrize("case, message", [
    ("wrong CA", "TLS certificate not trusted"),
    ("no client certificate", "TLS handshake failed"),
    ("missing CA file", "nope.pem is not a readable file"),
    ("client key that is not a key", "does not hold what its option expects"),
    ("plain Redis behind rediss://", "answers without TLS: use redis://"),
])
def test_tls_that_does_not_fit_is_a_configuration_error_on_one_line(project, r, tls_redis, pki, tmp_path, case,
                                                                       message):
    if case == "wrong CA":
        url = tls_url(tls_redis(), ssl_ca_certs=pki["other_ca"])
    elif case == "no client certificate":
        url = tls_url(tls_redis(require_client_cert=True), ssl_ca_certs=pki["ca"])
    elif case == "missing CA file":
        url = tls_url(tls_redis(), ssl_ca_certs=tmp_path / "nope.pem")
    elif case == "client key that is not a key":
        (tmp_path / "junk.key").write_text("not a key\n")
        url = tls_url(tls_redis(require_client_cert=True), ssl_ca_certs=pki["ca"],
                      ssl_certfile=pki["client_cert"], ssl_keyfile=tmp_path / "junk.key")
    else:
        plain_dir = tmp_path / "plain"
        plain_dir.mkdir()
        proc, plain = start_redis(plain_dir, tcp=True)
        url = plain.replace("redis://", "rediss://") + f"?ssl_ca_certs={pki['ca']}"
    project.write_config(marker_tasks(project.root, ["a"]))
    try:
        result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url)
    finally:
        if case == "plain Redis behind rediss://":
            proc.terminate()
            proc.wait(10)
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert message in line, line
    assert count_runs(project.root, "a", "started") == []
    assert r.get(f"maintenance:status:{DAY}") is None


# --- ACL users and the password file ---------------------------------------------------------


@pytest.fixture
def acl_user(r):
    """An ACL user that may do what the tool does on its own keys, and nothing on the others."""
    r.acl_setuser("maint", enabled=True, passwords=["+Tq7-acl-pass"], keys=["maintenance:*"],
                  commands=["+@all", "-flushall", "-flushdb"])
    yield "maint", "Tq7-acl-pass"
    r.acl_deluser("maint")


def test_an_acl_user_and_password_in_the_url_work(project, r, acl_user, redis_url):
    user, password = acl_user
    path = redis_url.removeprefix("unix://")
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=f"unix://{user}:{password}@{path}")
    assert result.returncode == 0, result.stderr
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["all_success"] is True
    wrong = project.run("run", "--date", "2026-11-24", TRADEUL_MAINT_REDIS_URL=f"unix://{user}:nope@{path}")
    assert wrong.returncode == 78 and "rejected the credentials" in wrong.stderr
    assert password not in result.stderr + wrong.stderr


def test_the_password_file_is_read_for_an_acl_user_and_is_on_no_command_line_or_environment(
        project, r, acl_user, redis_url, tmp_path):
    user, password = acl_user
    secret = tmp_path / "redis-password"
    secret.write_text(password + "\n")  # as `echo pass > file` writes it
    secret.chmod(0o600)
    seen = tmp_path / "task-env"
    (tmp_path / "peek.py").write_text(
        "import os, sys, time\n"
        f"open({str(seen)!r}, 'w').write(repr(dict(os.environ)))\n"
        "time.sleep(float(sys.argv[1]))\n")
    (project.root / "probe.py").write_text("def run(ctx):\n    ctx.redis.set('maintenance:probe', ctx.task)\n")
    project.write_config(f"""
        [[tasks]]
        name = "peek"
        command = ["{sys.executable}", "{tmp_path / 'peek.py'}", "2"]

        [[tasks]]
        name = "probe"
        python = "probe:run"
    """)
    url = f"unix://{user}@{redis_url.removeprefix('unix://')}"  # the user in the URL, the password in the file
    runner = project.spawn("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url,
                           TRADEUL_MAINT_REDIS_PASSWORD_FILE=str(secret))
    assert wait_for(seen.exists)
    exposed = Path(f"/proc/{runner.pid}/environ").read_bytes() + Path(f"/proc/{runner.pid}/cmdline").read_bytes()
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    assert password.encode() not in exposed
    assert password not in seen.read_text() + out + err
    assert json.loads(r.get(f"maintenance:status:{DAY}"))["all_success"] is True
    assert r.get("maintenance:probe") == "probe"  # a Python task's ctx.redis has the password too


def test_check_connects_with_the_password_file_as_run_does(project, r, acl_user, redis_url, tmp_path):
    user, password = acl_user
    secret = tmp_path / "redis-password"
    secret.write_text(password + "\n")
    project.write_config(marker_tasks(project.root, ["a"]))
    url = f"unix://{user}@{redis_url.removeprefix('unix://')}"
    result = project.run("check", "--now", "2026-11-30T12:00", TRADEUL_MAINT_REDIS_URL=url,
                         TRADEUL_MAINT_REDIS_PASSWORD_FILE=str(secret))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split(":")[0].split(maxsplit=2)[-1]: line for line in result.stdout.splitlines() if ":" in line}
    assert all(lines[name].startswith("✓") for name in ("redis", "redis write", "key types")), result.stdout
    assert password not in result.stdout + result.stderr


@pytest.mark.parametrize("problem, message", [
    ("missing", "cannot read the Redis password file"),
    ("empty", "is empty"),
    ("wrong", "rejected the credentials"),
    ("both", "has a password and a password file is set too"),
    ("no url", "but no Redis URL"),
])
def test_password_file_problems_are_configuration_errors(project, r, acl_user, redis_url, tmp_path, problem,
                                                          message):
    user, password = acl_user
    secret = tmp_path / "redis-password"
    if problem != "missing":
        secret.write_text({"empty": "\n", "wrong": "not-it\n"}.get(problem, password))
    path = redis_url.removeprefix("unix://")
    url = {"both": f"unix://{user}:{password}@{path}", "no url": ""}.get(problem, f"unix://{user}@{path}")
    project.write_config(marker_tasks(project.root, ["a"]))
    result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL=url, REDIS_URL="",
                         TRADEUL_MAINT_REDIS_PASSWORD_FILE=str(secret))
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert message in line and password not in line


def test_the_password_file_from_the_config_is_relative_to_it_and_serves_sentinel(project, tmp_path):
    """[redis] password_file, for a master and Sentinels that require the same password."""
    import subprocess
    import time

    from conftest import free_port
    from tradeul_maint.redisio.embedded import redis_server_binary

    master_dir = tmp_path / "master"
    master_dir.mkdir()
    master, master_url = start_redis(master_dir, "--requirepass", "Sx9-sentinel", tcp=True)
    master_port = int(master_url.rsplit(":", 1)[1].split("/")[0])
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
                    "sentinel auth-pass mymaster Sx9-sentinel\nrequirepass Sx9-sentinel\n")
    sentinel_port = free_port()
    sentinel = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel", "--port", str(sentinel_port),
                                 "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (project.root / "secrets").mkdir()
        (project.root / "secrets" / "redis").write_text("Sx9-sentinel\n")
        project.write_config(f"""
            [redis]
            url = "redis+sentinel://127.0.0.1:{sentinel_port}/mymaster/2"
            password_file = "secrets/redis"
        """ + marker_tasks(project.root, ["a"]))
        deadline = time.monotonic() + 15
        while True:
            result = project.run("run", "--date", DAY, TRADEUL_MAINT_REDIS_URL="", REDIS_URL="")
            if result.returncode != 75 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the sentinel needs a moment to learn its master
        assert result.returncode == 0, result.stderr
        client = redis.Redis(port=master_port, db=2, password="Sx9-sentinel", decode_responses=True)
        assert json.loads(client.get(f"maintenance:status:{DAY}"))["all_success"] is True
        client.close()
    finally:
        for proc in (sentinel, master):
            proc.terminate()
            proc.wait(10)
