"""The supervisor: one process per run that owns every task process, so none outlives its attempt.

The runner never starts a task itself. It forks this process (run/processes.py) and asks it,
over a socket pair, in the messages of run/messages.py, to start and stop attempts. The
process model of a run:

    runner ── supervisor (server.py: its own session; a child subreaper)
                ├── reaper of attempt 1 (reaper.py: a child subreaper, in the attempt's cgroup if any)
                │     └── the task's main process (attempt.py: own session and group) ── whatever it starts
                └── reaper of attempt 2 ...

The supervisor and a reaper talk over pipes (pipe.py). The reaper of an attempt reports it
ended only once no process of it is left: not the
main process, nor anything it started, in its process group or not. `lease_watch.py`
stops every attempt before a lease that stopped being renewed can pass to another
runner; run/containment.py says what keeps the processes together on this host and how a
later runner finds what a run that was killed outright left behind.
"""
