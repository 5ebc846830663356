"""A loopback HTTP(S) server with single range requests that counts the bytes it serves.

Used by tests/ml/test_safetensors_remote.py and benchmarks/bench_checkpoint.py (one tensor of
a remote file: bytes moved). tests/io/test_fsspec.py has its own copy of the same handler.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import re
import ssl
import threading
from typing import Optional


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files with HEAD, GET and single ``Range: bytes=a-b`` requests."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _file(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return data

    def do_HEAD(self) -> None:
        data = self._file()
        if data is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self) -> None:
        data = self._file()
        if data is None:
            return
        header = self.headers.get("Range")
        if header is None:
            status, body, first = 200, memoryview(data), None
        else:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, body, first = 206, memoryview(data)[start : end + 1], start
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if first is not None:
            self.send_header("Content-Range", f"bytes {first}-{first + len(body) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(body)
        with self.server.lock:
            self.server.gets.append(header)
            self.server.bytes_served += len(body)


class RangeServer(http.server.ThreadingHTTPServer):
    """``files`` maps URL paths to bytes; ``gets`` lists the Range headers of the GETs served
    (None for a whole-file GET) and ``bytes_served`` counts the body bytes sent."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.tls = tls
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.gets: list = []
        self.bytes_served = 0

    def get_request(self):
        sock, address = super().get_request()
        if self.tls is not None:  # the handshake runs in the handler's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        pass  # dropped connections are expected

    def reset_counts(self) -> None:
        with self.lock:
            self.gets.clear()
            self.bytes_served = 0

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.server_port}{path}"


def serve(tls: Optional[ssl.SSLContext] = None) -> RangeServer:
    """A RangeServer answering on a thread of its own (stop it with ``stop``)."""
    server = RangeServer(tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: RangeServer) -> None:
    server.shutdown()
    server.server_close()


def certificates(tmp_path):
    """A throwaway CA and a server certificate it signs for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shardseal test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
