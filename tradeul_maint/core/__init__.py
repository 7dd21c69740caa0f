"""What each command does, without the command line: load, plan, lock, run the cycles, report; `check`."""
