"""HTTPS on one machine: a hub reachable from other machines refuses to start without TLS; with a certificate
(self-signed, made here) the login page is served over HTTPS and the hub's cookies are Secure."""

import datetime
import ipaddress
import subprocess

import pytest
import requests
import yaml

from hubfixture import POSEHUB, Hub

pytestmark = pytest.mark.slow


def self_signed(folder):
    """A certificate for 127.0.0.1 that is its own CA, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posehub test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "hub.crt", folder / "hub.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


@pytest.mark.parametrize("ip", ["0.0.0.0", "192.0.2.10"])
def test_a_hub_reachable_from_other_machines_needs_tls(hub_config, tmp_path, ip):
    hub_config["hub"]["ip"] = ip
    path = tmp_path / "posehub.yaml"
    path.write_text(yaml.safe_dump(hub_config))
    out = subprocess.run([POSEHUB, "up", "--config", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert (f"PoseHub cannot start: {path}: hub.ip: {ip} can be reached from other machines, and passwords and "
            "tokens would cross the network in clear text: set hub.tls.cert_file and hub.tls.key_file, or "
            "hub.tls.behind_proxy_url (the https:// address of a TLS-terminating proxy in front), or listen on "
            "127.0.0.1") in out.stderr.splitlines()
    assert not (tmp_path / "state").exists()


def test_with_a_certificate_the_hub_speaks_https_with_secure_cookies(hub_config, tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    hub_config["hub"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the test's requests trust the self-signed certificate
    hub = Hub(hub_config, tmp_path).start()
    try:
        assert hub.url.startswith("https://")
        r = requests.get(f"{hub.url}/hub/login", timeout=10)
        assert r.status_code == 200 and "password" in r.text
        with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP on the same port
            requests.get(hub.url.replace("https://", "http://") + "/hub/login", timeout=10)
        s = requests.Session()
        hub.login(s, "admin", hub.admin_password)
        assert s.cookies, "no cookies after signing in"
        for cookie in s.cookies:
            assert cookie.secure, f"cookie {cookie.name} is not Secure"
    finally:
        hub.stop()
