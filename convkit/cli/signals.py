"""Signals while a command runs: SIGINT and SIGTERM become a KeyboardInterrupt in the main
thread, at a point where it can unwind cleanly, so that every staging file and folder is
removed on the way out (formats.output), and worker processes do not outlive the command.

main() (cli/app.py) installs this around a command and turns the interrupt into exit
130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: Modules whose code a KeyboardInterrupt must not hit: raised inside a worker pool's or a
#: lock's bookkeeping (a worker being started, a queue being fed) it leaves processes
#: nobody waits for, or locks nobody releases. The signal is acted on once they return.
_DEFER_IN = ("multiprocessing", "concurrent", "threading")
#: Seconds between two looks for a point where a deferred KeyboardInterrupt can be raised,
#: and the longest it is deferred (then it is raised wherever the main thread is).
DEFER_SECONDS = 0.02
DEFER_LIMIT_SECONDS = 2.0
#: Seconds the way out (clean-up included) may take after the KeyboardInterrupt before
#: convkit exits without it: a stuck worker pool must not keep a signalled process alive.
EXIT_WATCHDOG_SECONDS = 10.0


@contextmanager
def signals_interrupt() -> Iterator[SignalGuard]:
    """While the command runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread
    (see SignalGuard), so that every staging file and folder is removed on the way out.
    Outside the main thread nothing changes."""
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    guard.install()
    try:
        yield guard
    finally:
        guard.restore()


class SignalGuard:
    """Signal handling of one command.

    Once: a second signal while convkit cleans up is ignored, so the clean-up completes
    (within EXIT_WATCHDOG_SECONDS, or convkit exits without it). Deferred while the main
    thread is in worker-pool or threading code (see _DEFER_IN; raised a moment later, via
    SIGALRM, at most DEFER_LIMIT_SECONDS later). Worker processes forked by the command leave the
    decision to the parent: they ignore SIGINT (Ctrl-C in a terminal reaches them too) and
    end on SIGTERM, as they would without a handler. Signals ignored at start (SIGINT of a
    background job) stay ignored.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.main_pid = os.getpid()
        self.can_defer = hasattr(signal, "setitimer")
        # hook: `unraisable` is running; pending: a KeyboardInterrupt is still to be raised.
        # Set by item assignment only: a call would let a signal handler run in between.
        self.state = {"hook": False, "pending": False, "settled": False}
        self.saved: dict[int, Any] = {}
        self.previous_hook = sys.unraisablehook
        self.started = _uptime()  # worker processes started later are the command's
        self.first = 0.0  # time.monotonic() of the signal

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self.saved[signum] = signal.signal(signum, self.handler)
        # The deferral's timer: only when nobody else uses SIGALRM (e.g. a test's timeout).
        self.can_defer = self.can_defer and signal.getsignal(signal.SIGALRM) in (
            signal.SIG_DFL, None) and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        if self.can_defer:
            self.saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self.handler)
        sys.unraisablehook = self.unraisable
        _FORKING.append(self)

    def restore(self) -> None:
        _FORKING.remove(self)
        if self.can_defer:
            signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = self.previous_hook
        for signum, previous in self.saved.items():
            signal.signal(signum, previous)

    def settle(self) -> None:
        """The command is over: signals from now on are ignored (and a deferred one
        dropped), so that its exit path completes."""
        self.state["settled"] = True
        if self.can_defer and signal.SIGALRM in self.saved:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.main_pid:  # a forked worker: as without convkit's handler
            if signum == signal.SIGTERM:  # (a pool ends its workers with SIGTERM)
                os._exit(128 + signum)
            return
        state = self.state
        if state["settled"] or state["hook"]:
            return
        alarm = signum == getattr(signal, "SIGALRM", None)
        if not self.received and not alarm:
            self.received.append(signum)
            state["pending"] = True
            self.first = time.monotonic()
        if state["pending"]:
            if self.can_defer and _deferred(frame) and \
                    time.monotonic() - self.first < DEFER_LIMIT_SECONDS:
                signal.setitimer(signal.ITIMER_REAL, DEFER_SECONDS)
                return
            state["pending"] = False
            if self.can_defer:  # the watchdog of the way out
                signal.setitimer(signal.ITIMER_REAL, EXIT_WATCHDOG_SECONDS)
            raise KeyboardInterrupt
        if alarm and self.received:
            self.give_up()
        # else: a repeat while convkit cleans up, ignored

    def give_up(self) -> None:
        """The way out has taken EXIT_WATCHDOG_SECONDS (e.g. a worker pool that lost a
        worker in the middle of a message waits for it forever): end the workers, exit."""
        signum = self.received[0]
        try:
            word = "Terminated" if signum == signal.SIGTERM else "Interrupted"
            sys.stderr.write(f"{word}: the clean-up did not finish in "
                             f"{EXIT_WATCHDOG_SECONDS:g} s; exiting now.\n")
            stop_workers(self.started)
        finally:
            os._exit(128 + signum)

    def unraisable(self, hook: Any) -> None:
        """A KeyboardInterrupt where Python cannot pass it on (a __del__, an at-fork hook)
        would be printed as 'Exception ignored' and lost: raise it again, a moment later."""
        if not (issubclass(hook.exc_type, KeyboardInterrupt) and self.received
                and self.can_defer):
            self.previous_hook(hook)
            return
        self.state["hook"] = self.state["pending"] = True
        signal.setitimer(signal.ITIMER_REAL, DEFER_SECONDS)
        self.state["hook"] = False


#: The installed SignalGuard (while a command runs), for the fork hooks below.
_FORKING: list[SignalGuard] = []
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _before_fork() -> None:
    """Signals wait while a worker process is forked: between fork() and the child's own
    set-up, a signal would be lost in the child, and raised in at-fork code in the parent."""
    if _FORKING:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _after_fork_in_parent() -> None:
    if _FORKING:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _after_fork_in_child() -> None:
    """A worker ignores Ctrl-C (its parent decides) and ends on SIGTERM at once."""
    if not _FORKING:
        return
    guard = _FORKING.pop()
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: the guard's handler stands in
        pass
    sys.unraisablehook = guard.previous_hook
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _deferred(frame: FrameType | None) -> bool:
    """Whether the main thread is in code of _DEFER_IN (anywhere on its stack)."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").partition(".")[0] in _DEFER_IN:
            return True
        frame = frame.f_back
    return False


#: Seconds a worker process left behind by an interrupted command gets to end on SIGTERM.
WORKER_GRACE_SECONDS = 2.0


def stop_workers(since: float) -> None:
    """End the worker processes an interrupted command leaves behind (started after `since`,
    seconds of uptime): a header-reading pool interrupted while it starts a worker does not
    know that worker, which then waits for work forever (and the interpreter, for it at
    exit)."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:  # no pool was ever started
        return
    known = multiprocessing.active_children()
    for child in known:
        child.terminate()
    for child in known:
        child.join(WORKER_GRACE_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()
    for pid in _child_pids(since):  # forked, but not yet registered when the interrupt came
        _end_process(pid)


def _uptime() -> float:
    """Seconds since boot, as /proc/PID/stat counts a process's start (0 where unknown)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else 0.0


def _child_pids(since: float) -> list[int]:
    """This process's children started after `since` (seconds of uptime), from /proc
    (Linux); [] where there is no /proc."""
    me = os.getpid()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            parent, started = int(fields[1]), int(fields[19]) / ticks
        except (OSError, IndexError, ValueError):
            continue
        if parent == me and started >= since - 1.0 / ticks:
            found.append(int(entry))
    return found


def _end_process(pid: int) -> None:
    """SIGTERM, then SIGKILL after WORKER_GRACE_SECONDS; reaped."""
    try:
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + WORKER_GRACE_SECONDS
        while time.monotonic() < end:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


