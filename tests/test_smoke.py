import json

from conftest import count_runs, marker_tasks


def test_manual_run_executes_every_task_and_marks_session_done(project, r):
    project.write_config(marker_tasks(project.root, ["a", "b"], deps={"b": ["a"]}))
    result = project.cli("run", "--date", "2026-11-27")
    assert result.exit_code == 0, result.output
    assert count_runs(project.root, "a") == ["2026-11-27"]
    doc = json.loads(r.get("maintenance:status:2026-11-27"))
    assert doc["all_success"] is True and doc["tasks"] == {"a": "completed", "b": "completed"}
    assert r.get("maintenance:executed:2026-11-27") == "1"
