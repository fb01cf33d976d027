"""The API's certificate: made for each cluster at `up` (an ECDSA P-256 key, self-signed,
naming the head's address), kept in the state directory (key 0600). Clients trust it from
there (root on this machine) or by its SHA-256 fingerprint, which `token create` prints and
a remote client checks before it trusts the certificate it is shown (then keeps it)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from pathlib import Path

from cloudhpc.errors import CloudHPCError
from cloudhpc.secretfile import write_secret

CERT, KEY = "api.crt", "api.key"


def make_certificate(etc: Path, cluster: str, address: str) -> Path:
    """Write etc/api.crt and etc/api.key once; return the certificate's path."""
    cert_path, key_path = etc / CERT, etc / KEY
    if cert_path.exists() and key_path.exists():
        return cert_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cloudhpc {cluster} head")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName("head")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    write_secret(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def fingerprint(pem: str) -> str:
    """SHA-256 of the certificate's DER bytes, as colon-separated hex pairs."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def pinned_certificate(host: str, port: int, expected: str, cache: Path) -> Path:
    """Fetch the server's certificate, check it against the fingerprint the cluster's
    admin gave, and keep it for later connections (which verify it as usual)."""
    want = expected.replace(":", "").lower()
    path = cache / f"{want}.pem"
    if path.exists():
        return path
    try:
        pem = ssl.get_server_certificate((host, port), timeout=10)
    except OSError as exc:
        raise CloudHPCError(f"cannot reach {host}:{port}: {exc}",
                            hint="check the URL and that the cluster is up") from None
    got = fingerprint(pem).replace(":", "").lower()
    if got != want:
        raise CloudHPCError(f"the API at {host}:{port} shows a certificate with fingerprint "
                            f"{got}, not the one given", hint="check the fingerprint that "
                            "`cloudhpc token create` printed; someone may be in between")
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(pem)
    return path
