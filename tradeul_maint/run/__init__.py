"""Running a cycle: the runner, its supervisor and the task processes, tasks and built-ins."""
