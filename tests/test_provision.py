"""``scripts/provision`` for real, under ``--root``: venv and package, unit, config, state dir.

The first run builds a venv and pip-installs the repository into it (about 10 s with a warm pip
cache, more when the dependencies must be downloaded); the tests share it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROVISION = REPO / "scripts" / "provision"
VENV = "opt/presence-agent/venv"
UNIT = "etc/systemd/system/presence-agent.service"
CONFIG = "etc/presence-agent/config.toml"
STATE = "var/lib/presence-agent"


def provision(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROVISION), *args], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def outside_the_venv(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Mode, mtime and content of every path under root but the venv (which an upgrade replaces)."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_mode,
            path.stat().st_mtime_ns,
            path.read_bytes() if path.is_file() else b"",
        )
        for path in sorted(root.rglob("*"))
        if not path.is_relative_to(root / VENV)
    }


@dataclass(frozen=True)
class Provisioned:
    root: Path
    profile_arg: str
    profile: Path
    first_run: subprocess.CompletedProcess[str]
    config_after_first_run: str


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    work = tmp_path_factory.mktemp("provision")
    # Named as on a Pi, relative to the repository: the script finds it from any directory.
    profile_arg = "hw_configs/pi4-ethernet.toml"
    profile = REPO / profile_arg
    if not profile.exists():  # the hardware profiles may not have landed yet
        profile = work / "profile.toml"
        profile.write_text('[agent]\nname = "test"\n')
        profile_arg = str(profile)
    root = work / "root"
    result = provision("--root", str(root), "--profile", profile_arg, "--python", sys.executable, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return Provisioned(root, profile_arg, profile, result, (root / CONFIG).read_text())


def test_the_unit_runs_the_venv_agent_under_systemd_supervision(provisioned: Provisioned) -> None:
    unit = (provisioned.root / UNIT).read_text()
    assert (
        "ExecStart=/opt/presence-agent/venv/bin/presence-agent run"
        " --config /etc/presence-agent/config.toml --state-dir /var/lib/presence-agent" in unit
    )
    assert "Restart=on-failure" in unit.splitlines()
    assert "StateDirectory=presence-agent" in unit.splitlines()
    assert "StateDirectoryMode=0700" in unit.splitlines()


def test_the_unit_sets_a_file_limit_and_the_hardening_the_agent_allows(provisioned: Provisioned) -> None:
    lines = (provisioned.root / UNIT).read_text().splitlines()
    for setting in (
        "LimitNOFILE=4096",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/presence-agent",
    ):
        assert setting in lines, setting
    (families,) = [line for line in lines if line.startswith("RestrictAddressFamilies=")]
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= set(families.split("=", 1)[1].split())


def test_the_unit_passes_systemd_analyze_verify(provisioned: Provisioned, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here, so the unit cannot be verified")
    # verify insists that ExecStart's program exists: point it at the venv this test provisioned.
    unit = (provisioned.root / UNIT).read_text()
    checked = tmp_path / "presence-agent.service"
    checked.write_text(unit.replace("=/opt/presence-agent/venv/", f"={provisioned.root / VENV}/"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(checked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and bad values are warnings on stderr with exit 0: both must be clean.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_profile_becomes_the_config_and_the_state_dir_is_private(provisioned: Provisioned) -> None:
    assert provisioned.config_after_first_run == provisioned.profile.read_text()
    assert (provisioned.root / STATE).stat().st_mode & 0o777 == 0o700


def test_each_step_is_one_line(provisioned: Provisioned) -> None:
    lines = provisioned.first_run.stdout.splitlines()
    assert all(line.startswith("provision: ") for line in lines)
    assert any(line.startswith("provision: installed presence-agent ") for line in lines)
    assert lines[-1] == "provision: done"


def test_the_installed_agent_runs_from_the_venv_not_the_checkout(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    venv = provisioned.root / VENV
    shown = subprocess.run(
        [str(venv / "bin" / "presence-agent"), "keys", "show", "--state-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().startswith("pk")
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import agent; print(agent.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)  # not an editable install


def test_a_second_run_keeps_an_edited_config_and_changes_nothing_else(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    root = provisioned.root
    config = root / CONFIG
    config.write_text(provisioned.config_after_first_run + "# edited on this device\n")
    before = outside_the_venv(root)
    again = provision(
        "--root", str(root), "--profile", provisioned.profile_arg, "--python", sys.executable, cwd=tmp_path
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert outside_the_venv(root) == before
    assert config.read_text().endswith("# edited on this device\n")
    assert "provision: kept existing config" in again.stdout
    assert "provision: created" not in again.stdout
    assert "provision: installed presence-agent " in again.stdout  # the upgrade


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "hw_configs/no-such-board.toml"], "no-such-board.toml: no such file"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_bad_usage_is_refused_with_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = provision("--root", str(root), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    assert not root.exists()  # refused before touching anything
