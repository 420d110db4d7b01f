"""Read-only views of processes from /proc: trees, memory (RSS, PSS, peak) and CPU time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, the state, comes first)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def parent_map() -> dict[int, int]:
    """Every visible process id, mapped to its parent id."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    return parents


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (children first found by a scan of /proc)."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_map().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_python(pid: int) -> bool:
    """True for a Python interpreter (the role processes), False for job commands."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return "python" in os.path.basename(exe)


@dataclass(frozen=True)
class Memory:
    """Memory of one process, in bytes: resident, proportional (shared pages split), peak RSS."""

    rss: int
    pss: int
    hwm: int


def memory(pid: int) -> Memory | None:
    """RSS and PSS from smaps_rollup, peak RSS (VmHWM) from status; None if it is gone."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name] = int(rest.split()[0]) * 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                values["VmHWM"] = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return Memory(values.get("Rss", 0), values.get("Pss", 0), values.get("VmHWM", 0))


def rss(pid: int) -> int:
    """Resident set size in bytes from /proc/PID/statm (cheap enough to sample fast)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """User + system CPU time of these processes; with `children`, that of their reaped
    children instead (the commands a worker ran and waited for)."""
    total = 0
    first = 13 if children else 11
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[first]) + int(fields[first + 1])
    return total / TICKS


def pids_named(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment` (read-only: for CPU accounting)."""
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and fragment in cmdline(int(entry))
    ]
