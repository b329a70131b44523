"""The convkit command line: the only place where errors become exit codes.

Commands live in their own modules and only call the library and render its
results. `--debug` anywhere on the command line shows tracebacks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

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

for _name, _function in COMMANDS.items():
    app.command(_name, no_args_is_help=True)(_function)


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
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # documented on the root callback, taken here
    try:
        code = app(args, prog_name="convkit", standalone_mode=False)
    except ConvkitError as error:
        if debug:
            raise
        report_error(error)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as error:  # click usage errors and anything unexpected
        return _unexpected(error, debug)
    return code if isinstance(code, int) else 0


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
