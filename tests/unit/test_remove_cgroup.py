"""remove_cgroup walks a folder tree that another process may be removing at the same time
(the reapers of two worker processes that start together). Plain folders stand in for
cgroups: the walk and the removal are the same."""

from __future__ import annotations

from pathlib import Path

from actors.containment import remove_cgroup


def test_removes_a_tree_of_folders(tmp_path: Path) -> None:
    root = tmp_path / "jobrunner-123"
    (root / "ctx-1" / "slot-7").mkdir(parents=True)
    (root / "ctx-2").mkdir()
    remove_cgroup(root)
    assert not root.exists()


def test_a_tree_removed_by_another_process_meanwhile_is_no_error(tmp_path: Path) -> None:
    # what the second reaper meets when the first has just removed a cell it listed
    remove_cgroup(tmp_path / "jobrunner-123" / "ctx-1" / "slot-7")
    remove_cgroup(tmp_path / "gone")
    assert list(tmp_path.iterdir()) == []
