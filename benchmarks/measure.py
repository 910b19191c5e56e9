"""What the benchmarks measure of a running command: wall time, peak anonymous resident memory (the job's
process and its children, sampled about twice a second) and peak total resident memory (the scale benchmarks);
and a part of a benchmark run in a fresh interpreter, read back as JSON (`in_own_process`).

Anonymous memory (`RssAnon` in /proc/<pid>/status) is what the process itself holds. File pages of a
memory-mapped cache are `RssFile`: the kernel may drop them, so they count in the total only.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    """One command's run: its exit status, wall seconds, peak anonymous and peak total resident bytes, its output."""

    returncode: int
    wall_s: float
    peak_anon: int
    peak_rss: int
    output: str


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process has gone meanwhile
                todo.extend(int(c) for c in children.read_text().split())
    return out


def _resident(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of one process in bytes; zeros once it is gone."""
    anon = total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith("VmRSS:"):
                total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return anon, total


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, every_s: float = 0.5) -> Measured:
    """Run `cmd`, sampling the resident memory of its process tree every `every_s` seconds until it exits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            anon = total = 0
            for pid in _tree(proc.pid):
                a, t = _resident(pid)
                anon, total = anon + a, total + t
            peaks[0], peaks[1] = max(peaks[0], anon), max(peaks[1], total)
            done.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    return Measured(proc.returncode, wall, peaks[0], peaks[1], output)


def in_own_process(script: str, part: str, *options: str) -> dict:
    """`script --only PART *options` in a fresh Python process, its last line of output read as JSON: nothing
    a measurement run before it (threads, memory, traced functions) can slow it."""
    cmd = [sys.executable, script, "--only", part, *options]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])
