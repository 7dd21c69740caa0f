"""Secrets as tasks print them: what bench_redact.py measures and tests/test_secrets.py checks in every output.

Each entry is a line a task might print and the part of it that must never be seen again.
`LIVE_PASSWORD` stands for the tool's own Redis password: it has a blank, a slash and a
'#', so that it needs percent-encoding in a URL (issue 19's cases).
"""

from __future__ import annotations

LIVE_PASSWORD = "Lv9 s/ecret#pw"
LIVE_ENCODED = "Lv9%20s%2Fecret%23pw"

CORPUS: dict[str, tuple[str, str]] = {  # format -> (the line printed, what must go)
    "live password bare": (f"config dump: requirepass is {LIVE_PASSWORD} (from the secret)", LIVE_PASSWORD),
    "live password encoded": (f"url=redis://:{LIVE_ENCODED}@cache:6379/0", LIVE_ENCODED),
    "live password in a sentence": (f"could not auth with {LIVE_PASSWORD}, giving up", LIVE_PASSWORD),
    "redis-cli -a": ("+ redis-cli -h cache -a Hq3secretcli --no-auth-warning PING", "Hq3secretcli"),
    "--password X": ("running: pg_dump --password Pq4secretflag -h db", "Pq4secretflag"),
    "AUTH X (MONITOR)": ('1700000000.1 [0 10.0.0.1:5000] "AUTH" "Aq5secretauth"', "Aq5secretauth"),
    "AUTH user X": ("> AUTH default Aq6secretauth", "Aq6secretauth"),
    "Authorization: Bearer": ("> Authorization: Bearer tk6SecretBearer.abc", "tk6SecretBearer"),
    "bearer alone": ("using bearer tk7SecretAlone9 for the API", "tk7SecretAlone9"),
    "AWS key id": ("aws_access_key_id=AKIAQ3EGRHSDW5KQ7V2X", "AKIAQ3EGRHSDW5KQ7V2X"),
    "AWS key id bare": ("signed with AKIAQ3EGRHSDW5KQ7V3Y today", "AKIAQ3EGRHSDW5KQ7V3Y"),
    "AWS secret": ("aws_secret_access_key = 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", "wJalrXUtnFEMI"),
    "NAME=value": ("export DB_PASSWORD=Dq9secretenv", "Dq9secretenv"),
    "URL userinfo with a blank": ("connecting to redis://app:Uq0secret url@db:6379/0", "Uq0secret"),
    "GitHub token": ("token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 set", "ghp_A1b2"),
    "Slack token": ("SLACK=xoxb-1234567890-abcdefSecretSl", "abcdefSecretSl"),
    "JWT": ("cookie eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
            "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", "SflKxwRJ"),
    "private key": ("-----BEGIN RSA PRIVATE KEY-----MIIEpAIBAAKCAQEA7secretkeyb64-----END RSA PRIVATE KEY-----",
                    "MIIEpAIBAAKCAQEA7secretkeyb64"),
}
