"""Run `python -m poc` as a user does: a real subprocess, or in-process (`main(argv)`) where speed matters."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, runs_dir: Path | None = None, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return _run(["-m", "poc"], args, runs_dir, timeout, env)


# `python -m poc ARGS` that also prints, last, whether TensorFlow was imported ("tensorflow imported" or
# "no tensorflow"): what a refusal before TensorFlow's import is checked with.
_NOTING_TENSORFLOW = ("import sys\nfrom poc.cli import main\ncode = main(sys.argv[1:])\n"
                      "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow')\n"
                      "sys.exit(code)")


def run_cli_noting_tensorflow(*args: str, runs_dir: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return _run(["-c", _NOTING_TENSORFLOW], args, runs_dir, 120, env)


def _run(program: list[str], args, runs_dir: Path | None, timeout: int, env: dict) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    if runs_dir is not None:
        environ["VITRINE_RUNS_DIR"] = str(runs_dir)
    return subprocess.run([sys.executable, *program, *map(str, args)], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def call_cli(capsys, monkeypatch, *args, runs_dir: Path | None = None) -> Result:
    """`python -m poc ARGS` in this process: same parser, same exit codes, without paying TF's import again."""
    from poc.cli import main

    if runs_dir is not None:
        monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs_dir))
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return Result(code, out, err)


def call_main(*args, runs_dir: Path | None = None) -> Result:
    """`call_cli` for module fixtures, which cannot take capsys or monkeypatch: output captured with contextlib,
    the runs directory passed as `--runs-dir`."""
    import contextlib
    import io

    from poc.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args] + ([] if runs_dir is None else ["--runs-dir", str(runs_dir)])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Result(code, out.getvalue(), err.getvalue())
