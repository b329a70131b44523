"""The convkit command line: the only place where errors become exit codes.

Commands live in their own modules and only call the library and render its
results. `--debug` anywhere on the command line shows tracebacks.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer

# Each command module imports only typer, rich and convkit.cli.* (plus convkit.errors) at import
# time; the library and numpy/pydicom/nibabel load inside the command function. Importing all
# six here keeps start-up fast, and a missing module is an ImportError at start-up rather than
# a command that silently disappears from the CLI.
from convkit.cli.audit import audit
from convkit.cli.compare import compare
from convkit.cli.convert import convert
from convkit.cli.dicom2nii import dicom2nii
from convkit.cli.nii2dicom import nii2dicom
from convkit.cli.preview import preview
from convkit.errors import ConvkitError

app = typer.Typer(
    name="convkit",
    help="Medical image conversion with geometry you can trust: DICOM -> NIfTI/NRRD.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion cost no measurable start-up time (`convkit
    # --version`: 146 ms median with and without them, 30 runs each).
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


#: command name -> function, in the order `convkit --help` lists them.
COMMANDS: dict[str, Callable[..., None]] = {
    "dicom2nii": dicom2nii,
    "nii2dicom": nii2dicom,
    "convert": convert,
    "compare": compare,
    "preview": preview,
    "audit": audit,
}

class _Stopped(Exception):
    """A command's KeyboardInterrupt (Ctrl-C, SIGTERM), carried past typer to main(): typer
    would turn it into a bare exit 130, losing the signal and the batch's report."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__("interrupted")
        self.interrupt = interrupt


def _stopping(function: Callable[..., None]) -> Callable[..., None]:
    """The command, with KeyboardInterrupt raised as _Stopped (same signature for typer)."""

    @functools.wraps(function)
    def command(*args, **kwargs) -> None:
        try:
            function(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            raise _Stopped(interrupt) from interrupt

    return command


for _name, _function in COMMANDS.items():
    app.command(_name, no_args_is_help=True)(_stopping(_function))


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug",  # main() takes it from anywhere on the line
                               help="Show tracebacks for errors, internal ones included "
                                    "(accepted anywhere on the command line)."),
) -> None:
    """convkit: DICOM -> NIfTI/NRRD with a JSON sidecar, and more to come."""
    if version:
        from convkit import __version__

        typer.echo(f"convkit {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


def report_error(error: ConvkitError) -> None:
    """One red line with the message, one with the hint, on stderr."""
    from convkit.cli.render import error_console

    console = error_console()
    console.print(f"[bold red]Error:[/] {error.message}", highlight=False, soft_wrap=True)
    if error.hint:
        console.print(f"[yellow]Hint:[/] {error.hint}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point.

    SIGINT and SIGTERM raise KeyboardInterrupt in the command, so that every staging
    file and folder is removed on the way out (formats.output); the exit status is then
    128 + the signal's number, the shell's convention: 130 for SIGINT (Ctrl-C), 143 for
    SIGTERM. Python warnings raised during the command become one-line notes on stderr.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # documented on the root callback, taken here
    with _signals_interrupt() as guard, _warnings_as_notes(debug):
        try:
            code = app(args, prog_name="convkit", standalone_mode=False)
        except BaseException as error:
            guard.settle()  # from here on a signal is ignored: the exit path completes
            return _exit_code(error, guard, debug)
        guard.settle()
        if guard.received:  # interrupted outside a command (typer then returns 130)
            return _interrupted(guard.received, since=guard.started)
    return code if isinstance(code, int) else 0


def _exit_code(error: BaseException, guard: _SignalGuard, debug: bool) -> int:
    """The exit code for what the command raised, once its message is on stderr."""
    received, since = guard.received, guard.started
    if isinstance(error, _Stopped):
        return _interrupted(received, error.interrupt, since)
    if isinstance(error, KeyboardInterrupt):
        return _interrupted(received, error, since)
    if isinstance(error, ConvkitError) and not debug:
        report_error(error)
        return error.exit_code
    if isinstance(error, typer.Exit):
        return error.exit_code
    if isinstance(error, Exception) and not isinstance(error, ConvkitError):
        if received:  # e.g. a worker process ended by the same signal: not a bug
            return _interrupted(received, since=since)
        return _unexpected(error, debug)  # click usage errors and anything unexpected
    raise error  # --debug, SystemExit


def _interrupted(received: list[int], stop: BaseException | None = None,
                 since: float = 0.0) -> int:
    """'Interrupted.' (SIGINT, Ctrl-C: 130) or 'Terminated.' (SIGTERM: 143) on stderr, after
    what an interrupted batch did (when its command did not show it)."""
    report = getattr(stop, "report", None)
    if report is not None and not getattr(stop, "shown", False):
        from convkit.cli.render import error_console, interrupted_lines

        console = error_console()
        for line in interrupted_lines(report):
            console.print(line, highlight=False, soft_wrap=True)
    _stop_workers(since)
    signum = received[0] if received else signal.SIGINT
    print("Terminated." if signum == signal.SIGTERM else "Interrupted.", file=sys.stderr)
    return 128 + signum


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
def _signals_interrupt() -> Iterator[_SignalGuard]:
    """While the command runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread
    (see _SignalGuard), so that every staging file and folder is removed on the way out.
    Outside the main thread nothing changes."""
    guard = _SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    guard.install()
    try:
        yield guard
    finally:
        guard.restore()


class _SignalGuard:
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
            _stop_workers(self.started)
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


#: The installed _SignalGuard (while a command runs), for the fork hooks below.
_FORKING: list[_SignalGuard] = []
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


def _stop_workers(since: float) -> None:
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


@contextmanager
def _warnings_as_notes(debug: bool) -> Iterator[None]:
    """Python warnings (from pydicom, nibabel, numpy ...) as 'Note: <first line>' on stderr,
    each text once; the filters (-W, PYTHONWARNINGS) are left as they are. --debug shows
    them as Python prints them."""
    if debug:
        yield
        return
    from convkit.errors import exception_reason

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = exception_reason(message) if isinstance(message, Warning) else \
            (str(message).strip().splitlines() or [category.__name__])[0]
        if text not in shown:
            shown.add(text)
            sys.stderr.write(f"Note: {text}\n")

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def _unexpected(error: Exception, debug: bool) -> int:
    # typer ships its own click: recognise its usage errors by shape, not by import.
    show, exit_code = getattr(error, "show", None), getattr(error, "exit_code", None)
    if callable(show) and isinstance(exit_code, int):
        show()
        return exit_code
    if type(error).__name__ == "Abort":
        print("Aborted.", file=sys.stderr)
        return 1
    if debug:
        raise error
    report_error(ConvkitError(f"internal error: {type(error).__name__}: {error}",
                              "rerun with --debug and report the traceback"))
    return 70


if __name__ == "__main__":
    sys.exit(main())
