"""SIGTERM handled as Ctrl-C is. `kill`, SLURM's `scancel` and a container stop send SIGTERM; by default it ends
the process where it stands and leaves its runs RUNNING until their lease expires. Raised as `Terminated` (a
KeyboardInterrupt), it takes Ctrl-C's path: the job's runs and the sweep's parent end KILLED and say why, and the
same command resumes at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGINT_REASON = "stopped by the user (SIGINT)"
SIGTERM_REASON = "stopped by SIGTERM (kill, scancel or a container stop)"


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM: stop as on Ctrl-C, and exit 143 (128 + 15), as the signal itself would."""


def take_sigterm() -> None:
    """Raise `Terminated` on SIGTERM in this process, unless another library already handles it there: submitit
    (the SLURM launcher) bypasses SIGTERM in its jobs so that a preempted job can requeue, and Ray's workers have
    their own handler; theirs is kept. Only the main thread may set a handler, and only it receives signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once, cleanup or not
    raise Terminated


def reason(exc: BaseException) -> str:
    """The `interrupted` tag's value: which signal stopped the run."""
    return SIGTERM_REASON if isinstance(exc, Terminated) else SIGINT_REASON


def exit_status(exc: BaseException) -> int:
    """A shell's status for a process the signal ended: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
