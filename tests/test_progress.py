"""orthoref._progress and the commands that show it: a bar on stderr only when stderr is a terminal and
progress is not disabled; stdout (the results) is the same either way."""
import io
import sys

import pytest

from orthoref import _progress
from orthoref.cli import main


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _terminal(monkeypatch):
    """stderr as a terminal, set inside the test: pytest's capture resets sys.stderr between setup and call."""
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    return err


@pytest.mark.parametrize("tqdm", [True, False])
def test_a_bar_on_a_terminal_only(monkeypatch, tqdm):
    terminal = _terminal(monkeypatch)
    if not tqdm:
        monkeypatch.setitem(sys.modules, "tqdm", None)          # import tqdm fails: the text bar
    else:
        pytest.importorskip("tqdm")
    assert list(_progress.progress(range(5), desc="work")) == list(range(5))
    with _progress.Progress(3, "steps", enabled=True) as bar:
        bar.update(loss=0.5)
    shown = terminal.getvalue()
    assert "work" in shown and "steps" in shown
    terminal.seek(0)
    terminal.truncate()
    assert list(_progress.progress(range(5), desc="quiet", enabled=False)) == list(range(5))
    assert terminal.getvalue() == ""


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with _progress.Progress(3, "steps") as bar:
        bar.update()
    assert err.getvalue() == ""


@pytest.mark.parametrize("argv", [
    ["compare-projections", "--n", "8", "--repeat", "1"],
    ["oracle", "check", "--against", "data/golden", "--ops", "tanh"],
])
def test_commands_show_progress_on_a_terminal_and_print_the_same_results(argv, capsys, monkeypatch):
    import os
    terminal = _terminal(monkeypatch)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert main(argv) == 0
    with_bar = capsys.readouterr().out
    assert terminal.getvalue().strip()                        # the bar was drawn on stderr
    terminal.seek(0)
    terminal.truncate()
    assert main(argv + ["--no-progress"]) == 0
    without = capsys.readouterr().out
    first_words = lambda text: [line.split()[:1] for line in text.splitlines()]      # noqa: E731 (timings vary)
    assert terminal.getvalue() == "" and first_words(without) == first_words(with_bar)


def test_oracle_export_progress(tmp_path, monkeypatch):
    terminal = _terminal(monkeypatch)
    assert main(["oracle", "export", str(tmp_path / "fx"), "--ops", "tanh,relu", "--dtype", "float64"]) == 0
    assert "oracle export" in terminal.getvalue()


def test_analyze_and_compress_progress(tmp_path, monkeypatch, capsys):
    assert main(["train", "--epochs", "1", "--hidden", "16", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    checkpoint = str(tmp_path / "run" / "checkpoint.npz")
    for argv, desc in ((["analyze", checkpoint, "--no-figures", "--jacobian-examples", "4"], "analyze"),
                       (["compress", checkpoint, "--rank", "4"], "compress")):
        capsys.readouterr()
        terminal = _terminal(monkeypatch)
        assert main(argv) == 0
        with_bar = capsys.readouterr().out
        assert desc in terminal.getvalue()                      # the bar was drawn on stderr
        terminal = _terminal(monkeypatch)
        assert main(argv + ["--no-progress"]) == 0
        assert terminal.getvalue() == "" and capsys.readouterr().out == with_bar
