"""The wheel is the product: built from the repo it holds the agent and ``firmware_bridge`` only, and
installed into a clean venv it runs without the dev tools (matplotlib is the benchmark suite's).

The install takes its dependencies from the index pip is configured with, through pip's download
cache, so after the first run it costs about as long as creating the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_layers import DEV_ONLY

ROOT = Path(__file__).resolve().parent.parent
#: What a checkout has that a clean clone has not: never an input of the build.
BUILD_LEFTOVERS = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "node_modules"
)


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the repo (so stale ``build/`` trees cannot leak into it)."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=BUILD_LEFTOVERS)
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source, cwd=work
    )
    assert built.returncode == 0, built.stderr
    [path] = (work / "dist").glob("presence_agent-*.whl")
    return path


def test_the_wheel_holds_the_agent_and_firmware_bridge_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"agent", "firmware_bridge", "presence_agent-0.1.0.dist-info"}
    assert "agent/cli.py" in names
    assert "agent/core/engine.py" in names
    # The node library's MicroPython sources ship as data, for provisioning to copy onto a node.
    assert {
        f"firmware_bridge/micropython/{m}.py" for m in ("cbor", "cose", "ed25519", "records", "sha512")
    } <= set(names)
    # The web view's page ships inside the package: devices are often offline, nothing comes from a CDN.
    assert {"agent/web/static/index.html", "agent/web/static/app.js", "agent/web/static/style.css"} <= set(
        names
    )
    metadata = zipfile.ZipFile(wheel).read("presence_agent-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_a_clean_venv_runs_the_installed_wheel_without_the_dev_tools(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    created = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    # This interpreter's pip installs into the venv (no ensurepip per run); its cache serves the downloads.
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    helped = run(venv / "bin" / "presence-agent", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "presence-agent" in helped.stdout

    modules = [
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in zipfile.ZipFile(wheel).namelist()
        if name.endswith(".py")
        and not name.endswith("__main__.py")
        # MicroPython sources for nodes: data, imported by their own names on a node, not as host modules.
        and not name.startswith("firmware_bridge/micropython/")
    ]
    # The modules that need a dev extra (virtual Bluetooth: Bumble) are shipped, and say what is missing.
    needs_extra = sorted(set().union(*DEV_ONLY.values()))
    assert set(needs_extra) <= set(modules)
    modules = [m for m in modules if m not in needs_extra]
    for module in needs_extra:
        refused = run(python, "-c", f"import {module}", cwd=tmp_path)
        assert refused.returncode != 0 and "install the dev extra" in refused.stderr, refused.stderr
    everything = run(
        python, "-c", f"import {', '.join(modules)}; import agent; print(agent.__file__)", cwd=tmp_path
    )
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.startswith(str(venv))  # the installed copy, not the checkout

    # The installed server finds its page in the installed package.
    files = run(
        python, "-c", "from agent.web.server import static_files; print(sorted(static_files()))", cwd=tmp_path
    )
    assert files.returncode == 0, files.stderr
    assert files.stdout.strip() == "['/', '/app.js', '/style.css']"

    plotting = run(python, "-c", "import matplotlib", cwd=tmp_path)
    assert plotting.returncode != 0
    assert "No module named 'matplotlib'" in plotting.stderr
