"""A throwaway certificate authority and per-node certificates for Dask's TLS in tests,
made with ``cryptography`` (the same files a real cluster's operator would issue)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(folder: Path):
    """(CA certificate path, CA certificate, CA key): a self-signed CA valid for one day."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("shardseal test CA")).issuer_name(_name("shardseal test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_node_cert(folder: Path, name: str, ca_cert, ca_key) -> tuple:
    """(certificate path, key path) of a node (scheduler, worker or client) signed by the CA,
    valid for localhost and 127.0.0.1, for both server and client authentication."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def make_security(folder: Path):
    """A ``distributed.Security`` with a fresh CA and one certificate per role (scheduler,
    worker, client), encryption required on every connection."""
    import distributed

    ca_path, ca_cert, ca_key = make_ca(folder)
    files = {role: make_node_cert(folder, role, ca_cert, ca_key) for role in ("scheduler", "worker", "client")}
    return distributed.Security(
        tls_ca_file=str(ca_path),
        tls_scheduler_cert=str(files["scheduler"][0]), tls_scheduler_key=str(files["scheduler"][1]),
        tls_worker_cert=str(files["worker"][0]), tls_worker_key=str(files["worker"][1]),
        tls_client_cert=str(files["client"][0]), tls_client_key=str(files["client"][1]),
        require_encryption=True)
