"""The packages' layering (pyproject.toml's [tool.importlinter] contracts)
holds, and the check run by scripts/test.sh fails on an arrow against it."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LINT = pathlib.Path(sys.executable).with_name("lint-imports")


def _lint(tree: pathlib.Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first, so that the copy's packages are analysed rather than
    # the checkout the virtualenv's editable install points at.
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT), "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def _copy(tmp_path: pathlib.Path) -> pathlib.Path:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "static", "viewsrc",
                                    "*.pyc")
    for package in ("enforcement", "controller", "testbed"):
        shutil.copytree(ROOT / package, tree / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    # The domain reaching up into the lifecycle.
    ("enforcement/domain/model.py", "import enforcement.lifecycle.ledger",
     "the gRPC edge -> the lifecycle"),
    # Plain data importing the policy parser for a type.
    ("enforcement/domain/model.py", "import enforcement.domain.policy",
     "The domain's plain data"),
    # The service depending on the OpenFlow side.
    ("enforcement/lifecycle/service.py", "import controller.openflow.fabric",
     "never depends on the OpenFlow controller"),
    # The OpenFlow side reaching into the lifecycle instead of its port.
    ("controller/openflow/fabric.py", "import enforcement.lifecycle.ledger",
     "The switch side uses the domain only"),
    # The topology reaching up into the OS-Ken app.
    ("controller/topology/hosts.py", "import controller.osken.app",
     "controller: the composition root"),
    # The product leaning on the lab harness.
    ("controller/process/config.py", "import testbed.lab",
     "never depends on the lab harness"),
])
def test_an_import_against_the_layering_fails_the_check(tmp_path, module, line, contract):
    tree = _copy(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # injected by the test\n")
    done = _lint(tree)
    assert done.returncode != 0, done.stdout
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, done.stdout
