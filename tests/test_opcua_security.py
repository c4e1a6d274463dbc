"""OPC UA security: SignAndEncrypt sessions, untrusted server certificates refused until trusted, credentials."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edged.drivers.opcua.emulator import OpcUaEmulator
from edged.drivers.opcua.security import Pki, generate_client_cert, read_password
from edged.errors import DeviceUnavailable
from edged.tag import Quality

from daemon_support import Proc
from opcua_support import VALUES, cell_text, free_port, load, set_all

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PKI folder with edged's client certificate, generated once for the module (key generation is slow)."""
    root = tmp_path_factory.mktemp("pki-src") / "pki"
    pki = Pki(root)
    pki.create()
    generate_client_cert(pki.own_cert, pki.own_key, "urn:test:edged")
    return root


def _copy_pki(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edged(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_read_with_sign_and_encrypt_refuses_an_untrusted_server_until_trusted(tmp_path: Path, client_pki: Path) -> None:
    pki = _copy_pki(client_pki, tmp_path / "pki")
    port = free_port()
    keys = ('security_policy = "Basic256Sha256"\nsecurity_mode = "SignAndEncrypt"\npki = "pki"\n'
            'application_uri = "urn:test:edged"')
    (tmp_path / "cell.toml").write_text(cell_text(port, keys=keys))
    sets = [a for n, v in VALUES.items() for a in ("--set", f"robot.{n}={json.dumps(v)}")]
    server = Proc(["simulate", "-c", "cell.toml", *sets], cwd=tmp_path)
    try:
        server.wait_for("serving", timeout=60)
        first = _edged("read", "-c", "cell.toml", "--json", cwd=tmp_path)
        assert first.returncode == 1
        rejected = list((pki / "rejected" / "certs").iterdir())
        assert len(rejected) == 1 and not list((pki / "trusted" / "certs").iterdir())
        assert "is not trusted" in first.stderr and "edged opcua trust" in first.stderr
        assert str(rejected[0]) in first.stderr and "Traceback" not in first.stderr
        assert all(r["quality"] == "bad" for r in json.loads(first.stdout))

        trust = _edged("opcua", "trust", str(rejected[0]), "--pki", "pki", cwd=tmp_path)
        assert trust.returncode == 0, trust.stderr
        assert not rejected[0].exists() and len(list((pki / "trusted" / "certs").iterdir())) == 1

        second = _edged("read", "-c", "cell.toml", "--json", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        rows = {r["tag"]: r for r in json.loads(second.stdout)}
        assert set(rows) == {f"robot.{n}" for n in VALUES}
        assert {k.split(".")[1]: r["value"] for k, r in rows.items()} == VALUES
        assert all(r["quality"] == "good" for r in rows.values())
        assert rows["robot.joints"]["dims"] == [3] and rows["robot.axis"]["unit"] == "deg"
    finally:
        server.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("policy, mode", [("Aes256_Sha256_RsaPss", "SignAndEncrypt"), ("Aes128_Sha256_RsaOaep", "Sign")])
async def test_a_server_with_only_one_policy_and_mode(tmp_path: Path, client_pki: Path, policy: str, mode: str) -> None:
    _copy_pki(client_pki, tmp_path / "pki")
    port = free_port()
    keys = (f'security_policy = "{policy}"\nsecurity_mode = "{mode}"\npki = "pki"\n'
            'application_uri = "urn:test:edged"\nauto_trust_first = true\nmode = "poll"')
    cell = load(tmp_path, cell_text(port, keys=keys))
    emu = OpcUaEmulator([cell.devices["robot"].driver], cert_dir=tmp_path / "server")
    await emu.start()
    try:
        set_all(emu, cell)
        await asyncio.sleep(0.1)
        # a client asking for another policy is told what the server offers
        other = load(tmp_path, cell_text(port, keys=keys.replace(policy, "Basic256Sha256")), "b.toml")
        with pytest.raises(DeviceUnavailable, match=f"offers no endpoint with Basic256Sha256/{mode}.*{policy}/{mode}"):
            await other.devices["robot"].driver.connect()
        plain = load(tmp_path, cell_text(port), "none.toml")
        with pytest.raises(DeviceUnavailable):
            await plain.devices["robot"].driver.connect()
            await plain.devices["robot"].driver.read("fast")
        await plain.devices["robot"].driver.close()

        drv = cell.devices["robot"].driver
        await drv.connect()  # auto_trust_first: the trusted folder is empty, so this first server is trusted
        try:
            got = {r.tag.name: r for g in ("fast", "default") for r in await drv.read(g)}
        finally:
            await drv.close()
        assert {n: r.value for n, r in got.items()} == VALUES
        assert all(r.quality == Quality.GOOD for r in got.values())
        assert drv.status()["security"] == f"{policy}/{mode}"
        trusted = list((tmp_path / "pki" / "trusted" / "certs").iterdir())
        assert len(trusted) == 1 and trusted[0].read_bytes() == emu.server_cert("robot").read_bytes()
    finally:
        await emu.stop()
        emu.close()


def test_auto_trust_first_trusts_only_while_nothing_is_trusted(tmp_path: Path, client_pki: Path) -> None:
    from edged.drivers.opcua.security import UntrustedServer, check_server_cert

    pki = Pki(tmp_path / "pki")
    pki.create()
    one, two = tmp_path / "one.der", tmp_path / "two.der"
    generate_client_cert(one, tmp_path / "one.pem", "urn:one", days=30)
    generate_client_cert(two, tmp_path / "two.pem", "urn:two", days=30)
    assert "auto_trust_first" in check_server_cert(pki, one.read_bytes(), "opc.tcp://a", auto_trust_first=True)
    assert check_server_cert(pki, one.read_bytes(), "opc.tcp://a", auto_trust_first=True) == ""
    with pytest.raises(UntrustedServer) as exc:
        check_server_cert(pki, two.read_bytes(), "opc.tcp://b", auto_trust_first=True)
    assert exc.value.rejected.exists() and "edged opcua trust" in str(exc.value)


def test_gen_cert_command_announces_the_application_uri(tmp_path: Path) -> None:
    from cryptography import x509

    res = _edged("opcua", "gen-cert", "--pki", "pki", "--application-uri", "urn:cell7:edged", "--days", "10",
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cert = x509.load_der_x509_certificate((tmp_path / "pki/own/certs/edged_cert.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:cell7:edged"]
    assert (tmp_path / "pki/own/private/edged_key.pem").stat().st_mode & 0o077 == 0
    again = _edged("opcua", "gen-cert", "--pki", "pki", cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr


def test_password_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert read_password(str(tmp_path / "pw"), None) == "s3cret"
    monkeypatch.setenv("ROBOT_PW", "from-env")
    assert read_password(None, "ROBOT_PW") == "from-env"
    monkeypatch.delenv("ROBOT_PW")
    with pytest.raises(OSError, match="ROBOT_PW"):
        read_password(None, "ROBOT_PW")
    assert read_password(None, None) is None


@pytest.mark.asyncio
async def test_username_and_password_from_the_environment_never_logged(tmp_path: Path, client_pki: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    _copy_pki(client_pki, tmp_path / "pki")
    port = free_port()
    keys = ('pki = "pki"\napplication_uri = "urn:test:edged"\nauto_trust_first = true\nmode = "poll"\n'
            'username = "operator"\npassword_env = "ROBOT_PASSWORD"')
    cell = load(tmp_path, cell_text(port, keys=keys))
    emu = OpcUaEmulator([cell.devices["robot"].driver], cert_dir=tmp_path / "server",
                        users={"operator": "Corr3ct-Horse"})
    await emu.start()
    caplog.set_level("DEBUG")
    try:
        set_all(emu, cell)
        drv = cell.devices["robot"].driver
        monkeypatch.setenv("ROBOT_PASSWORD", "wrong-Pa55")
        with pytest.raises(DeviceUnavailable, match="refused the session"):
            await drv.connect()
        monkeypatch.setenv("ROBOT_PASSWORD", "Corr3ct-Horse")
        await drv.connect()
        try:
            got = {r.tag.name: r for r in await drv.read("fast")}
        finally:
            await drv.close()
        assert got["axis"].value == VALUES["axis"] and got["axis"].quality == Quality.GOOD
    finally:
        await emu.stop()
        emu.close()
    assert "Corr3ct-Horse" not in caplog.text and "wrong-Pa55" not in caplog.text
