"""The command's error contract: the package's own errors and missing extras are one line and exit 2,
anything else is a bug and keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from largekernel import cli
from largekernel.errors import ConfigurationError


def _fake_subcommand(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def run(args):
        raise error

    module = types.ModuleType("largekernel_fake_subcommand")
    module.add_arguments = lambda parser: None
    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"fake": (module.__name__, "a stand-in subcommand")})


def test_package_errors_are_one_line_and_exit_2(monkeypatch, capsys) -> None:
    _fake_subcommand(monkeypatch, ConfigurationError("--kernel-size must be odd, got 4"))
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err == "largekernel fake: error: --kernel-size must be odd, got 4\n"


def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch) -> None:
    _fake_subcommand(monkeypatch, ValueError("an internal invariant broke"))
    with pytest.raises(ValueError, match="internal invariant"):
        cli.main(["fake"])


def test_a_missing_extra_names_the_pip_command() -> None:
    # a fresh process in which Lightning cannot be imported
    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "from largekernel.cli import main\n"
        "raise SystemExit(main(['train', '--epochs', '1', '--quiet']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "largekernel train: error: this needs lightning, which is not installed: pip install 'largekernel[train]'"
    ]
