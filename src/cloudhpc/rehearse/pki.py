"""The rehearsal's certificates: its own CA, and one server certificate for the names of
Azure's endpoints it stands in for (Resource Manager, blob storage) and its local addresses.
The VM image trusts the CA (image layer); the CLI passes it to the SDK."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cloudhpc.secretfile import write_secret

NAMES = ["management.azure.com", "*.blob.core.windows.net", "localhost"]


def _write(etc: Path, stem: str, cert: object, key: object) -> None:
    from cryptography.hazmat.primitives import serialization

    write_secret(etc / f"{stem}.key", key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (etc / f"{stem}.crt").write_bytes(cert.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM))


def ensure(etc: Path, addresses: list[str]) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) in ETC, made once."""
    etc.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_crt, crt, key = etc / "ca.crt", etc / "server.crt", etc / "server.key"
    if ca_crt.exists() and crt.exists() and key.exists():
        return ca_crt, crt, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudhpc rehearsal CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=825))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ["127.0.0.1", *addresses]]
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                          "management.azure.com")]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=825))
              .add_extension(x509.SubjectAlternativeName(sans), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
    _write(etc, "ca", ca, ca_key)
    _write(etc, "server", server, server_key)
    return ca_crt, crt, key
