"""The convkit command line: the only place where errors become exit codes.

Commands live in their own modules and only call the library and render its
results. `--debug` anywhere on the command line shows tracebacks.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import import_module

import typer

# numpy asks the kernel for huge pages for large arrays (madvise); where the kernel then
# compacts memory to make them (transparent_hugepage/defrag = madvise, common), allocating a
# 157 MB volume costs up to 0.3 s of system time instead of 0.05 s, at random. The command
# line asks numpy not to (its documented switch, read when numpy is imported; a user's own
# setting wins). Library users keep numpy's default.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
# numpy's OpenBLAS starts a thread per core when numpy is imported, and each spins for
# ~50 ms of CPU before it sleeps: in every convkit process, on the core that deflates or
# converts another series. convkit's matrix products are small (affines, N x 3 points), so
# the command line asks for one BLAS thread, unless the user set OpenBLAS's or OpenMP's.
if not os.environ.get("OMP_NUM_THREADS"):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from convkit.cli.signals import SignalGuard, signals_interrupt, stop_workers
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


#: command name -> the module defining it (convkit.cli.NAME, function NAME), in the order
#: `convkit --help` lists them. Each command module imports only typer, rich and convkit.cli.*
#: (plus convkit.errors) at import time; the library and numpy/pydicom/nibabel load inside
#: the command function.
COMMANDS: dict[str, str] = {name: f"convkit.cli.{name}" for name in (
    "dicom2nii", "nii2dicom", "convert", "compare", "preview", "audit", "report", "index")}
#: Root options that take a value (the command is the first argument that is neither an
#: option nor one of these values).
_ROOT_VALUES = ("--max-memory",)

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


def register(names: Iterable[str]) -> None:
    """Register these commands with the app (importing their modules), in COMMANDS' order.

    A command line registers only the command it runs (register_for): building and
    importing the other seven cost ~5-10 ms of every run's start-up. `convkit --help`, an
    unknown name and shell completion register them all."""
    order = list(COMMANDS)
    for name in names:
        if name not in {command.name for command in app.registered_commands}:
            function = getattr(import_module(COMMANDS[name]), name)
            app.command(name, no_args_is_help=True)(_stopping(function))
    app.registered_commands.sort(key=lambda command: order.index(command.name or ""))


def register_for(args: list[str]) -> None:
    """Register what a command line needs: its command, or every command when it names
    none of them (root --help, a typo that click then suggests a name for, completion)."""
    command = None
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _ROOT_VALUES:
            skip = True
        elif not arg.startswith("-"):
            command = arg
            break
    completing = any(name.startswith("_CONVKIT_COMPLETE") or name.startswith("_TYPER_COMPLETE")
                     for name in os.environ)
    register([command] if command in COMMANDS and not completing else COMMANDS)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug",  # main() takes it from anywhere on the line
                               help="Show tracebacks for errors, internal ones included "
                                    "(accepted anywhere on the command line)."),
    max_memory: str = typer.Option(None, "--max-memory", metavar="SIZE",
                                   help="Largest image to allocate, e.g. 32G or 500M (default "
                                        "16G): a header describing more is refused as corrupt. "
                                        "Give it before the command."),
) -> None:
    """convkit: DICOM -> NIfTI/NRRD with a JSON sidecar, and more to come."""
    if max_memory is not None:
        from convkit.volume import set_memory_limit

        set_memory_limit(parse_size(max_memory))  # for this call of main() (its own context)
    if version:
        from convkit import __version__

        typer.echo(f"convkit {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


#: --max-memory suffixes (binary units, as memory is counted).
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'32G', '500M', '1.5T', '64GiB' or a number of bytes -> bytes (a usage error otherwise)."""
    from convkit.errors import UsageError

    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    try:
        value = float(cleaned[: len(cleaned) - len(unit)])
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UsageError(f"--max-memory {text!r} is not a size", "e.g. --max-memory 32G")
    return int(value * _SIZE_UNITS[unit])


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

    Called without argv (the process's own command line: the process ends next), the
    objects left are frozen out of the cyclic collector: its passes at interpreter exit
    cost a tenth of a small conversion (0.035 s of a 0.4 s CT to .nii).
    """
    try:
        return _run(argv)
    finally:
        if argv is None:
            gc.freeze()


def _run(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # documented on the root callback, taken here
    register_for(args)
    with signals_interrupt() as guard, _warnings_as_notes(debug):
        try:
            # its own context: --max-memory (a context variable) lasts for this call only
            code = contextvars.copy_context().run(app, args, prog_name="convkit",
                                                  standalone_mode=False)
        except BaseException as error:
            guard.settle()  # from here on a signal is ignored: the exit path completes
            return _exit_code(error, guard, debug)
        guard.settle()
        if guard.received:  # interrupted outside a command (typer then returns 130)
            return _interrupted(guard.received, since=guard.started)
    return code if isinstance(code, int) else 0


def _exit_code(error: BaseException, guard: SignalGuard, debug: bool) -> int:
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
    stop_workers(since)
    signum = received[0] if received else signal.SIGINT
    print("Terminated." if signum == signal.SIGTERM else "Interrupted.", file=sys.stderr)
    return 128 + signum


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
