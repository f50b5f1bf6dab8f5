"""Every command's --help: one default per option, plain metavars, the command's own name in the usage line, text
wrapped as paragraphs (no line breaks copied from the source), and no torch or Gymnasium import before it prints."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

from dacer2.cli.eval import eval_main
from dacer2.cli.export import export_main
from dacer2.cli.plot import plot_main
from dacer2.cli.sweep import sweep_main
from dacer2.cli.train import train_main
from dacer2.config import TrainConfig

COMMANDS = {"dacer2-train": train_main, "dacer2-eval": eval_main, "dacer2-export": export_main,
            "dacer2-plot": plot_main, "dacer2-sweep": sweep_main}
BORDERS = "│|"


def render_help(main, monkeypatch, columns: int = 80) -> str:
    """The help text as a UTF-8 terminal of this width shows it (tyro draws its boxes only where sys.stdout.encoding
    is exactly "utf-8", which pytest's capture is not)."""
    monkeypatch.setenv("COLUMNS", str(columns))  # tyro wraps to the terminal width
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(out):
        main(["--help"])
    assert exit_info.value.code == 0
    out.seek(0)
    return out.read()


def help_entries(text: str) -> list[tuple[str, list[str], int]]:
    """(option line, the entry's help text lines, help column width) of each argument in the help boxes. An entry
    starts at a line with text right after the box border; the help column starts where continuation lines start."""
    boxes: list[list[str]] = []
    for line in text.splitlines():
        if line[:1] in BORDERS and len(line) > 4:
            if not boxes or not boxes[-1]:
                boxes.append([])
            boxes[-1].append(line)
        elif boxes and boxes[-1]:
            boxes.append([])
    entries = []
    for box in filter(None, boxes):
        inner = [line[1:-1] for line in box if line[2] == " " and line[1:-1].strip()]  # continuation lines
        indents = [len(text) - len(text.lstrip()) + 1 for text in inner]
        if not indents:
            continue
        start = max(set(indents), key=indents.count)  # the help column
        for line in box:
            width = len(line) - 2 - start  # the text is padded to the help column's width, then " │"
            name = line[2:].split("  ")[0]  # an option's name and metavar: single spaces only
            own = line[start:-2].rstrip() if 2 + len(name) < start else ""  # "" where a long name fills the line
            if line[2] != " ":
                entries.append((line, [own] if own else [], width))
            elif entries:
                entries[-1][1].append(own)
    return entries


def ragged_breaks(text: str) -> list[str]:
    """Help lines that end although the next line's first word would have fit: a line break taken over from a
    docstring instead of made by the wrapping."""
    found = []
    for option, lines, width in help_entries(text):
        for line, following in zip(lines, lines[1:]):
            first_word = following.split(" ")[0]
            if following and len(line) + 1 + len(first_word) <= width:
                found.append(f"{option.strip()}: {line!r} / {following!r}")
    return found


@pytest.mark.parametrize("prog", COMMANDS)
def test_usage_names_the_command_and_types_are_plain(prog, monkeypatch):
    text = render_help(COMMANDS[prog], monkeypatch)
    assert text.startswith(f"usage: {prog} "), text.splitlines()[0]  # the command's name, not the script's path
    assert "{None" not in text and "None}" not in text, text  # Optional fields show their type: INT, not {None}|INT


@pytest.mark.parametrize("prog", COMMANDS)
def test_each_option_states_one_default(prog, monkeypatch):
    entries = help_entries(render_help(COMMANDS[prog], monkeypatch))
    assert len(entries) >= 3
    doubled = [(option.strip(), lines) for option, lines, _ in entries if " ".join(lines).count("(default:") > 1]
    assert doubled == []


@pytest.mark.parametrize("prog", COMMANDS)
def test_help_text_is_wrapped_as_paragraphs(prog, monkeypatch):
    assert ragged_breaks(render_help(COMMANDS[prog], monkeypatch)) == []


def test_ragged_breaks_finds_a_line_break_copied_from_a_docstring():
    box = ["╭─ options ──────────────────────────╮",
           "│ --a INT  How env steps and updates │",
           "│          interleave. An iteration  │",
           "│          steps. (default: 1)       │",
           "│ --b INT  Seeds,                    │",
           "│          every pair. (default: 0)  │",
           "╰────────────────────────────────────╯"]
    assert ragged_breaks("\n".join(box)) == [f"{box[4]}: 'Seeds,' / 'every pair. (default: 0)'"]


@pytest.mark.parametrize("columns", [80, 120])
def test_train_help_wraps_whole_paragraphs(columns, monkeypatch):
    text = render_help(train_main, monkeypatch, columns)
    assert ragged_breaks(text) == [], ragged_breaks(text)
    assert "--protocol {sac,papers}" in text and "--num-envs INT " in text


def test_train_help_types(monkeypatch):
    text = render_help(train_main, monkeypatch)
    assert "--actor-hidden INT [INT ...]" in text and "--critic-hidden INT [INT ...]" in text
    assert "--temporal-weighting, --no-temporal-weighting" in text and "--progress, --no-progress" in text
    assert "--total-steps INT " in text and "--run-dir STR " in text and "(default: None)" not in text


def test_export_positional_has_a_name(monkeypatch):
    usage = render_help(export_main, monkeypatch).splitlines()[0]
    assert usage.startswith("usage: dacer2-export [-h] RUN_DIR_OR_CHECKPOINT"), usage
    assert " STR " not in usage.split("[--out")[0] + " ", usage


def test_optional_options_parse_as_before():
    """Unset options stay None; a value sets them; the Optional bool is a flag pair."""
    parse = lambda *args: tyro.cli(TrainConfig, args=list(args))  # noqa: E731
    cfg = parse()
    assert (cfg.total_steps, cfg.temporal_weighting, cfg.actor_hidden, cfg.run_dir) == (None, None, None, None)
    cfg = parse("--total-steps", "5000", "--actor-hidden", "64", "64", "--no-temporal-weighting", "--run-dir", "r")
    assert (cfg.total_steps, cfg.actor_hidden, cfg.temporal_weighting, cfg.run_dir) == (5000, (64, 64), False, "r")
    assert parse("--temporal-weighting").temporal_weighting is True


def test_help_imports_neither_torch_nor_gymnasium():
    script = ("import sys\nimport dacer2.cli.train\ntry:\n    dacer2.cli.train.train_main(['--help'])\n"
              "except SystemExit:\n    pass\n"
              "print('LOADED', sorted(m for m in ('torch', 'gymnasium') if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: dacer2-train" in proc.stdout
    assert "LOADED []" in proc.stderr, proc.stderr[-2000:]


def test_user_errors_still_importable_and_gym_registration_still_works():
    script = ("import dacer2, sys\nfrom dacer2.cli.train import USER_ERRORS\nfrom dacer2.envs import EnvError\n"
              "from dacer2.train.checkpoint import CheckpointError\n"
              "assert USER_ERRORS == (ValueError, EnvError, CheckpointError)\n"
              "import gymnasium as gym\nassert dacer2.MULTIGOAL_ID in gym.registry\nprint('OK')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_console_script_usage_names_the_command():
    script = Path(sys.executable).parent / "dacer2-train"
    if not script.is_file():
        pytest.skip("dacer2-train is not installed beside this interpreter")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: dacer2-train [-h] [OPTIONS]"), proc.stdout.splitlines()[:1]
