"""Which process owns a run: precise enough that, on the same host, a dead owner can be told from a live one.

A host name and a pid are not enough: pids are reused, and two containers can share a host name and pid
numbers. The owner string adds the boot id, the pid namespace and the process's start time (psutil's).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "unknown"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "unknown"


def started(pid: int) -> str | None:
    """When a process started, as recorded in owner strings; None if it is gone or this user may not see it."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def owner() -> str:
    """This process, precisely enough to tell on this host whether it still runs: host, boot id, pid namespace,
    pid and start time (a reused pid has a later start time)."""
    pid = os.getpid()
    parts = (socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), _pid_namespace(), str(pid))
    return "|".join((*parts, started(pid) or "unknown"))


def owner_exited(recorded: str | None) -> bool:
    """True only when `recorded` is a process of this boot and pid namespace that certainly no longer runs:
    no process has its pid (`kill(pid, 0)` says so even where /proc hides other users' processes, unlike
    psutil.pid_exists, which then looks the pid up in /proc), or the process with that pid started at another
    time (the pid was reused). A process this
    user may not inspect (another user's job, /proc mounted with hidepid), or a record from before start times
    were psutil's (whole clock ticks), is left to its lease."""
    parts = (recorded or "").split("|")
    if len(parts) != 5 or "unknown" in parts or "." not in parts[4]:
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
    now = started(int(pid))
    return now is not None and now != start  # cannot tell (another user's process): the lease decides
