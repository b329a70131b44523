"""The CLI as a new user first meets it: every --help, the tables on a narrow terminal, notes.

In-process through convkit.cli.app.main (no subprocess), with COLUMNS pinned.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import typer.main

from convkit.cli import dicom2nii as dicom2nii_cli
from convkit.cli.app import COMMANDS, app, main, register

register(COMMANDS)  # a command line registers only the command it runs; these tests read all

SAMPLE_DICOM = Path(__file__).resolve().parents[1] / "sample_data" / "dicom"
#: Metavars that typer versions with drifted help print instead of TEXT, PATH, flags...
PLACEHOLDER = re.compile(r"<(bool|str|int|float|path|list|choice)\b|\{[a-z_]+\}")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def flat(text: str) -> str:
    """Help text without rich's box and line breaks: wrapped help reads as one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def click_command(name: str | None):
    group = typer.main.get_command(app)
    return group if name is None else group.commands[name]


def declared_help(name: str | None) -> dict[str, str]:
    """Help text per parameter as the command function declares it (typer.Option/Argument):
    what the help must show, whatever the typer/click versions pass on to click."""
    if name is None:
        callback = app.registered_callback.callback
    else:
        callback = next(c.callback for c in app.registered_commands if c.name == name)
    parameters = inspect.signature(callback).parameters
    return {param: info.default.help for param, info in parameters.items()
            if getattr(info.default, "help", None)}


def test_every_registered_command_is_in_commands():
    assert [c.name for c in app.registered_commands] == list(COMMANDS)
    assert sorted(click_command(None).commands) == sorted(COMMANDS)


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_shows_usage_and_every_option(capsys, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, *([name] if name else []), "--help")
    assert code == 0, err
    text = flat(out)
    assert f"Usage: convkit {name or ''}".strip() in text
    assert not PLACEHOLDER.search(out), PLACEHOLDER.search(out)
    command = click_command(name)
    usage = re.search(r"Usage: [^\n]*", out).group(0)
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            assert (param.metavar or param.name.upper()) in usage, (param.name, usage)
        else:
            for opt in param.opts + param.secondary_opts:
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (name, opt)
    for param, help_text in declared_help(name).items():
        assert flat(help_text)[:40] in text, (name, param)  # arguments' help too
    if name is None:
        for command_name in COMMANDS:
            assert command_name in text


def test_root_help_documents_debug_and_completion(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = run(capsys, "--help")
    text = flat(out)
    assert "--debug Show tracebacks for errors" in text
    assert "--install-completion" in text and "--show-completion" in text


def test_format_help_lists_every_format(capsys, monkeypatch):
    from convkit.formats import FORMATS

    assert dicom2nii_cli.FORMATS == tuple(FORMATS)
    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = run(capsys, "dicom2nii", "--help")
    assert " | ".join(FORMATS) in flat(out)


def test_list_table_fits_80_columns_with_whole_labels(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "dicom2nii", "--list", SAMPLE_DICOM, "--json")
    labels = [series["label"] for series in json.loads(out)["series"]]
    assert code == 0 and labels
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "dicom2nii", "--list", SAMPLE_DICOM)
    assert code == 0
    lines = out.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), max(lines, key=len)
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == len(labels)  # one line per series: no cell wrapped
    for label in labels:
        assert any(f"│ {label} " in row for row in rows), label


def test_written_table_fits_80_columns(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "dicom2nii", SAMPLE_DICOM, tmp_path / "out")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert rows and all(len(line) <= 80 for line in out.splitlines())
    assert all("…" not in row for row in rows)  # the labels fit whole at 80 columns
    assert any("2_Chest_CT_synthetic" in row and "128x128x70" in row for row in rows)


@pytest.fixture
def stack_of_70(tmp_path) -> Path:
    data = np.add.outer(np.arange(16 * 16).reshape(16, 16), np.arange(70) * 10)
    path = tmp_path / "stack.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_mosaic_says_when_fewer_tiles_are_drawn(capsys, stack_of_70, tmp_path):
    args = ("preview", stack_of_70, "-o", tmp_path / "m.png", "--mosaic", "5x5", "--step", "10")
    code, out, err = run(capsys, *args)
    assert code == 0
    note = "7 of 25 tiles: --step 10 over 70 slices"
    assert f"Note: {note}" in err and note not in out
    code, out, err = run(capsys, *args, "--force", "--json")
    report = json.loads(out)
    assert note in report["notes"] and len(report["tiles"]) == 7
    code, out, err = run(capsys, "preview", stack_of_70, "-o", tmp_path / "full.png",
                         "--mosaic", "5x5", "--step", "2")
    assert code == 0 and "tiles" not in err  # 25 of 25: nothing to say
