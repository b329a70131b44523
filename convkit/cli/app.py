"""The convkit command line: the only place where errors become exit codes.

Commands live in their own modules and only call the library and render its
results. `--debug` anywhere on the command line shows tracebacks.
"""

from __future__ import annotations

import sys

import typer

from convkit.errors import ConvkitError

app = typer.Typer(
    name="convkit",
    help="Medical image conversion with geometry you can trust: DICOM -> NIfTI/NRRD.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


#: command name -> module under convkit.cli defining a function of the same name (snake_case).
COMMANDS = ("dicom2nii", "nii2dicom", "convert", "compare", "preview", "audit")


def _register_commands() -> None:
    """Register each command whose module is installed (modules import lazily: fast start-up)."""
    from importlib import import_module
    from importlib.util import find_spec

    for name in COMMANDS:
        module_name = f"convkit.cli.{name}"
        if find_spec(module_name) is None:
            continue
        module = import_module(module_name)
        app.command(name, no_args_is_help=True)(getattr(module, name.replace("-", "_")))


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Show the version and exit."),
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
    args = [a for a in args if a != "--debug"]
    _register_commands()
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
    if hasattr(error, "show") and isinstance(getattr(error, "exit_code", None), int):
        error.show()
        return error.exit_code
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
