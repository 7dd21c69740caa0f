"""Every environment variable the tool reads or sets, named here and nowhere else.

Read, after the command line and before the configuration file: CONFIG, REDIS_URL (then
the generic REDIS_URL other tools use), REDIS_PASSWORD_FILE, STATE_DIR, LOG_DIR,
CALENDAR_CACHE (an image's prebuilt calendar), PUSHGATEWAY, and NOW (`--now`, for trials).
Set in each task's process: DATE, TASK and RUN_ID. The run id also marks every process a
run starts, which is how the next runner on the host finds what a killed run left.
"""

from __future__ import annotations

CONFIG = "TRADEUL_MAINT_CONFIG"
REDIS_URL = "TRADEUL_MAINT_REDIS_URL"  # also what a `redis_env = true` task gets: a URL that works
GENERIC_REDIS_URL = "REDIS_URL"  # read when TRADEUL_MAINT_REDIS_URL is not set
REDIS_PASSWORD_FILE = "TRADEUL_MAINT_REDIS_PASSWORD_FILE"
STATE_DIR = "TRADEUL_MAINT_STATE_DIR"
LOG_DIR = "TRADEUL_MAINT_LOG_DIR"
CALENDAR_CACHE = "TRADEUL_MAINT_CALENDAR_CACHE"
PUSHGATEWAY = "TRADEUL_MAINT_PUSHGATEWAY"
NOW = "TRADEUL_MAINT_NOW"

DATE = "TRADEUL_MAINT_DATE"
TASK = "TRADEUL_MAINT_TASK"
RUN_ID = "TRADEUL_MAINT_RUN_ID"

READ = frozenset({CONFIG, REDIS_URL, GENERIC_REDIS_URL, REDIS_PASSWORD_FILE, STATE_DIR, LOG_DIR, CALENDAR_CACHE,
                  PUSHGATEWAY, NOW})
SET_FOR_TASKS = frozenset({DATE, TASK, RUN_ID})
