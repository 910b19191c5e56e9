"""Which process owns a run: precise enough that, on the same host, a dead owner can be told from a live one.

A host name and a pid are not enough: pids are reused, and two containers can share a host name and pid
numbers. The owner string adds the boot id, the pid namespace and the process's start time.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "unknown"


def _start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if stat == "unknown":
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "unknown"


def owner() -> str:
    """This process, precisely enough to tell on this host whether it still runs: boot id, pid namespace,
    pid and start time (a reused pid has a later start time)."""
    pid = os.getpid()
    return "|".join(
        (
            socket.gethostname(),
            _read("/proc/sys/kernel/random/boot_id"),
            _pid_namespace(),
            str(pid),
            _start_ticks(pid) or "unknown",
        )
    )


def owner_exited(recorded: str | None) -> bool:
    """True only when `recorded` is a process of this boot and pid namespace that certainly no longer runs:
    no process has its pid (`kill(pid, 0)` says so even where /proc hides other users' processes), or the
    process with that pid started at another time (the pid was reused). A process this user may not signal
    or inspect (another user's job, /proc mounted with hidepid) is left to its lease."""
    parts = (recorded or "").split("|")
    if len(parts) != 5 or "unknown" in parts:
        return False
    _, boot, namespace, pid, start = parts
    if boot != _read("/proc/sys/kernel/random/boot_id") or namespace != _pid_namespace():
        return False  # another machine or container: only its lease can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False  # it exists but is not ours to signal (another user's): its lease decides
    now = _start_ticks(int(pid))
    return now is not None and now != start  # unreadable /proc/<pid>: cannot tell, the lease decides
