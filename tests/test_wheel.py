"""The wheel runs the documented commands outside a checkout.

The wheel is built from a copy of the sources, installed into a fresh virtual environment
(which takes torch and the other dependencies from the site-packages of the environment that
runs the suite, but never the checkout's ``halluc_cl``), and its ``halluc-cl`` runs in an
empty folder.

``python -m venv --system-site-packages`` would not do: run from a virtual environment or a
conda-style prefix, it inherits the *base* interpreter's site-packages, not the running
environment's. A ``.pth`` file in the new environment lists this interpreter's site-packages
folders instead. A ``.pth`` line that is a path only extends ``sys.path``; the ``.pth`` files
inside those folders are not processed, so an editable install of the checkout (its finder
hook is a ``.pth`` file) never activates there.

It takes about a minute on 2 cores beyond the tiny base model (a wheel build and four fresh
processes that import Lightning).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


def _site_packages() -> list[str]:
    """This interpreter's site-packages folders, in ``sys.path`` order (a venv, a conda
    prefix, the base interpreter, a user site)."""
    seen = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.name in ("site-packages", "dist-packages") and path.is_dir() \
                and str(path) not in seen:
            seen.append(str(path))
    return seen


def _run(args: list, cwd: Path, env: dict | None = None, screen: bool = False) -> str:
    """stdout of a command that must succeed (with ``screen``: stdout and stderr, what a
    terminal shows)."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr if screen else done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtual environment holding the freshly built wheel."""
    if _setuptools_major() < 68:  # pyproject.toml's build requirement, built offline here
        pytest.skip("building the wheel without isolation needs setuptools>=68 installed")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "halluc_cl", src / "halluc_cl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", tmp / "dist", src], tmp)
    (wheel,) = (tmp / "dist").glob("halluc_cl-*.whl")
    env = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env], tmp)
    (own,) = (env / "lib").glob("python*/site-packages")
    (own / "_halluc_cl_test_deps.pth").write_text("\n".join(_site_packages()) + "\n")
    _run([env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--force-reinstall",
          "--no-index", "-q", wheel], tmp)
    return env


@pytest.fixture
def in_empty_folder(tmp_path, halluc_cache, venv):
    """``run(*args)``: ``halluc-cl <args>`` of the venv, in an empty folder, without the
    checkout on the path; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HALLUC_CL_CACHE=halluc_cache, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    folder = tmp_path / "empty"
    folder.mkdir()

    def run(*args: str, screen: bool = False) -> str:
        return _run([venv / "bin" / "halluc-cl", *args], folder, env, screen)

    run.folder, run.env = folder, env
    return run


def test_the_venv_imports_the_wheel(venv, in_empty_folder):
    where = _run([venv / "bin" / "python", "-c", "import halluc_cl; print(halluc_cl.__file__)"],
                 in_empty_folder.folder, in_empty_folder.env)
    assert Path(where.strip()).is_relative_to(venv)


def test_version_and_help(in_empty_folder):
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r"^version = \"(.+)\"$", pyproject, re.MULTILINE)
    assert in_empty_folder("--version") == f"halluc-cl {version.group(1)}\n"
    text = in_empty_folder("--help")
    for command in ("fit", "validate", "test", "pretrain", "compare", "probe", "analyze keys"):
        assert f"\n  {command} " in text


def test_shipped_grid_from_an_empty_folder(venv, in_empty_folder):
    out = in_empty_folder("compare", "--config", "compare/tiny", "--dry_run", "true")
    assert "2 cells, 0 done" in out
    configs = re.findall(r"--config (\S+)", out)
    assert configs and all(Path(c).is_relative_to(venv) and Path(c).is_file() for c in configs)
    assert list(in_empty_folder.folder.iterdir()) == []


def test_quick_fit_from_an_empty_folder(in_empty_folder, tiny_model_dir):
    screen = in_empty_folder("fit", "--config", "sft", "--config", "world/tiny",
                             "--trainer.max_epochs", "2", "--trainer.enable_progress_bar",
                             "false", "--artifacts.save_model", "false", screen=True)
    # the first screen: parameter counts and the run folder, no FLOPs, no advertisement
    assert "FLOPs" not in screen and "Tip:" not in screen and "litlogger" not in screen
    assert "Trainable params: 123 K" in screen and "\nstudent | GPT2LMHeadModel" in screen
    assert "run folder: runs/sft/version_0" in screen
    run = in_empty_folder.folder / "runs" / "sft" / "version_0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and "heldout_test_acc" in summary["final"]
    assert (run / "metrics.csv").is_file() and (run / "config.yaml").is_file()
