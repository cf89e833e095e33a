"""``presence-agent fleet-ca``: the offline CA end to end in a temporary directory.

init, issue, list, revoke, list again; what it refuses (an existing CA, bad
input: exit 2 with one line, nothing changed); serials never reused, even when
a command dies between reserving a serial and writing its certificate. Most
runs call ``main`` in-process (a subprocess costs half a second); one runs the
real command to see the one-line error on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.core.certs import CertificateError, TrustReason, verify_certificate, verify_revocation_list
from agent.core.keys import peer_key_string, public_key_from_string
from agent.state import fleet_ca
from agent.state.identity import generate_identity

DEVICE = generate_identity().peer_key_string
OTHER = generate_identity().peer_key_string


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["fleet-ca", *args])
    out, err = capsys.readouterr()
    return code, out, err


def init(capsys: pytest.CaptureFixture[str], directory: Path) -> bytes:
    code, out, err = cli(capsys, "init", "--dir", str(directory))
    assert (code, err) == (0, "")
    return public_key_from_string(out.strip())


def issue(capsys: pytest.CaptureFixture[str], directory: Path, key: str = DEVICE, *extra: str) -> Path:
    code, out, err = cli(capsys, "issue", "--dir", str(directory), "--device-key", key, *extra)
    assert (code, err) == (0, ""), err
    return Path(out.strip())


def test_init_issue_list_revoke_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ca_key = init(capsys, ca)
    assert (ca / "ca.key").stat().st_mode & 0o777 == 0o600
    assert ca.stat().st_mode & 0o777 == 0o700
    # The fleet's mesh key, a secret copied to every device (it seals radio frames).
    assert (ca / "mesh.key").stat().st_mode & 0o777 == 0o600 and len((ca / "mesh.key").read_bytes()) == 32

    first = issue(capsys, ca, DEVICE, "--metadata", '{"site": "depot-3", "role": "gateway"}')
    second = issue(capsys, ca, OTHER, "--metadata", '{"site": "depot-4"}', "--days", "2")
    assert (first.name, second.name) == ("0000000001.cert", "0000000002.cert")
    cert = verify_certificate(first.read_bytes(), [ca_key], [], int(os.path.getmtime(first)))
    assert (cert.serial, cert.device_key_string, dict(cert.metadata)) == (
        1,
        DEVICE,
        {"site": "depot-3", "role": "gateway"},
    )
    assert (
        verify_certificate(second.read_bytes(), [ca_key], [], cert.issued_at).expiry
        == cert.issued_at + 2 * 86_400
    )

    code, out, _ = cli(capsys, "list", "--dir", str(ca))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["SERIAL", "DEVICE", "METADATA", "EXPIRES", "(UTC)", "STATUS"]
    assert lines[1].split()[:3] == ["1", DEVICE, '{"role":"gateway","site":"depot-3"}']
    assert lines[1].split()[-1] == lines[2].split()[-1] == "valid"

    code, out, _ = cli(capsys, "revoke", "--dir", str(ca), "1")
    assert code == 0 and "revocation list 1" in out
    revocations = verify_revocation_list((ca / "revoked.cose").read_bytes(), [ca_key])
    assert (revocations.counter, revocations.serials) == (1, {1})
    with pytest.raises(CertificateError) as caught:
        verify_certificate(first.read_bytes(), [ca_key], [revocations], cert.issued_at)
    assert caught.value.reason is TrustReason.REVOKED

    code, out, _ = cli(capsys, "revoke", "--dir", str(ca), "1")  # again: nothing to re-sign
    assert code == 0 and "already revoked" in out
    code, out, _ = cli(capsys, "revoke", "--dir", str(ca), "2")
    assert "revocation list 2" in out

    code, out, _ = cli(capsys, "list", "--dir", str(ca), "--json")
    document = json.loads(out)
    assert document["ca_key"] == peer_key_string(ca_key)
    assert document["revocation_counter"] == 2
    assert [(c["serial"], c["device_key"], c["revoked"]) for c in document["certificates"]] == [
        (1, DEVICE, True),
        (2, OTHER, True),
    ]
    code, out, _ = cli(capsys, "list", "--dir", str(ca))
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["revoked", "revoked"]


def test_init_refuses_to_overwrite_a_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    init(capsys, tmp_path)
    key_before = (tmp_path / "ca.key").read_bytes()

    code, out, err = cli(capsys, "init", "--dir", str(tmp_path))

    assert code == 1 and out == ""
    assert "ca.key exists" in err and "NOT replaced" in err and len(err.splitlines()) == 1
    assert (tmp_path / "ca.key").read_bytes() == key_before


@pytest.mark.parametrize(
    "args",
    [
        ("issue", "--device-key", "pkbad", "--metadata", "{}"),
        ("issue", "--device-key", DEVICE, "--metadata", "[1, 2]"),
        ("issue", "--device-key", DEVICE, "--metadata", "{not json"),
        ("issue", "--device-key", DEVICE, "--metadata", json.dumps({"x": "y" * 4100})),
        ("issue", "--device-key", DEVICE, "--metadata", "{}", "--days", "0"),
        ("issue", "--device-key", DEVICE, "--metadata", "{}", "--days", "ten"),
        ("issue", "--device-key", DEVICE, "--metadata", "{}", "--days", "99999"),
        ("revoke", "7"),
        ("revoke", "-1"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    init(capsys, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    code, out, err = cli(capsys, args[0], "--dir", str(tmp_path), *args[1:])

    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("presence-agent: ")
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_directory_without_a_ca_or_with_damaged_counters_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = cli(capsys, "list", "--dir", str(tmp_path / "none"))
    assert code == 1 and "holds no CA" in err and len(err.splitlines()) == 1

    init(capsys, tmp_path)
    (tmp_path / "counters.json").write_text('{"next_serial": "one"}')
    code, _, err = cli(capsys, "issue", "--dir", str(tmp_path), "--device-key", DEVICE, "--metadata", "{}")
    assert code == 1 and "counters.json is damaged" in err
    (tmp_path / "counters.json").unlink()
    code, _, err = cli(capsys, "issue", "--dir", str(tmp_path), "--device-key", DEVICE, "--metadata", "{}")
    assert code == 1 and "counters.json is missing" in err
    assert list((tmp_path / "certs").iterdir()) == []


def test_a_serial_is_never_reused_after_a_crash_between_reserving_and_writing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init(capsys, tmp_path)
    issue(capsys, tmp_path, DEVICE, "--metadata", "{}")

    class Crash(BaseException):
        pass

    def die(path: Path, data: bytes, mode: int) -> bool:
        raise Crash  # as kill -9 would: after the serial was reserved, before the file exists

    with monkeypatch.context() as patch:
        patch.setattr(fleet_ca, "_create", die)
        with pytest.raises(Crash):
            main(["fleet-ca", "issue", "--dir", str(tmp_path), "--device-key", DEVICE, "--metadata", "{}"])

    assert issue(capsys, tmp_path, OTHER, "--metadata", "{}").name == "0000000003.cert"  # 2 was burned
    assert json.loads((tmp_path / "counters.json").read_text())["next_serial"] == 4


def test_the_real_command_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fleet-ca", "revoke", "--dir", str(tmp_path), "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "presence-agent: SERIAL must be a whole number, got 'x'\n"
