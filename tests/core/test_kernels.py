"""The native engine's AES-GCM kernels (OpenSSL EVP, ipsec-mb): each one available on this machine
passes the same tests and gives the same bytes.

The ``backend`` fixture is overridden here to mean "the native backend with one kernel", and the
backend-parametrised suites below (Wycheproof, the container vectors, the public API, tampering,
threads) are imported so that they run once per available kernel. SHARDSEAL_REQUIRE_IPSEC_MB=1
(CI on VAES/AVX-512 machines) turns a missing ipsec-mb kernel into a failure instead of a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import shardseal
from shardseal import AuthenticationError
from shardseal.core import backend as _backend
from tests.cli_helpers import PACKAGE_ROOT  # the package under test: src/ or site-packages
from tests.conftest import NATIVE

pytestmark = pytest.mark.skipif(NATIVE is None, reason="native module not built")

KERNELS = sorted(NATIVE.kernel_status()) if NATIVE is not None else []
AVAILABLE = [k for k in KERNELS if NATIVE.kernel_status()[k] is None]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Selects one native kernel for the test (skips one that cannot run here); restores after."""
    reason = NATIVE.kernel_status()[request.param]
    if reason is not None:
        if request.param == "ipsec-mb" and os.environ.get("SHARDSEAL_REQUIRE_IPSEC_MB") == "1":
            pytest.fail(f"SHARDSEAL_REQUIRE_IPSEC_MB=1 but the ipsec-mb kernel is unavailable: {reason}")
        pytest.skip(f"{request.param} kernel unavailable: {reason}")
    saved = NATIVE.kernel()
    NATIVE.select_kernel(request.param)
    try:
        yield request.param
    finally:
        NATIVE.select_kernel(saved)


@pytest.fixture
def backend(kernel, monkeypatch):
    """Overrides conftest's fixture: the native backend, with the kernel under test."""
    monkeypatch.setattr(_backend, "name", "native")
    monkeypatch.setattr(_backend, "impl", NATIVE)
    return NATIVE


# The backend-parametrised suites, re-run here once per kernel (pytest collects imported tests).
from tests.container.test_api import *  # noqa: E402,F401,F403
from tests.container.test_tampering import *  # noqa: E402,F401,F403
from tests.core.test_threads import *  # noqa: E402,F401,F403
from tests.container.test_vectors import *  # noqa: E402,F401,F403
from tests.core.test_wycheproof import test_aes_gcm  # noqa: E402,F401

SIZES = [0, 1, 15, 16, 17, 16383, 16384, 16385, 2 * 16384 + 500, 64 * 16384 + 7, (1 << 21) + 3]


def _with_kernel(name: str, fn):
    saved = NATIVE.kernel()
    NATIVE.select_kernel(name)
    try:
        return fn()
    finally:
        NATIVE.select_kernel(saved)


@pytest.mark.parametrize("suite", [256, 128])
@pytest.mark.parametrize("size", SIZES)
def test_kernels_give_identical_messages(suite, size):
    key, salt, context = bytes(range(suite // 8)), bytes(range(24)), b"ctx"
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    sealed = {k: _with_kernel(k, lambda: NATIVE.seal(suite, key, salt, context, data, 2, b"")) for k in AVAILABLE}
    assert len(set(sealed.values())) == 1, "kernels disagree"
    for opener in AVAILABLE:
        for message in sealed.values():
            assert _with_kernel(opener, lambda: NATIVE.open(suite, key, context, message, 2)) == data


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_chunk_runs_match_whole_messages(kernel, threads):
    key, salt = os.urandom(32), os.urandom(24)
    data = os.urandom(70 * 16384 + 99)
    message = NATIVE.seal(256, key, salt, b"", data, threads, b"")
    keys = NATIVE.MessageKeys(256, key, salt, b"")
    out = bytearray(len(message) - 56)
    keys.seal_chunks_into(0, data, out, True, threads)
    assert bytes(out) == message[56:]
    plain = bytearray(len(data))
    keys.open_chunks_into(0, message[56:], plain, True, threads)
    assert plain == data


@pytest.mark.parametrize("threads", [1, 2])
def test_a_tampered_chunk_zeroes_the_whole_output(kernel, threads):
    key, salt = os.urandom(32), os.urandom(24)
    data = os.urandom(200 * 16384 + 5)
    message = bytearray(NATIVE.seal(256, key, salt, b"", data, threads, b""))
    message[56 + 150 * (16384 + 16) + 7] ^= 1
    out = np.full(len(data), 0xAA, np.uint8)
    with pytest.raises(AuthenticationError):
        NATIVE.open_into(256, key, b"", message, out, threads)
    assert not out.any(), "plaintext released from a failed decryption"


def test_a_bad_single_message_tag_is_an_authentication_error(kernel):
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = bytearray(NATIVE.gcm_seal(key, nonce, b"aad", b"x" * 100))
    assert sealed == AESGCM(key).encrypt(nonce, b"x" * 100, b"aad")
    sealed[-1] ^= 0x80
    with pytest.raises(AuthenticationError):
        NATIVE.gcm_open(key, nonce, b"aad", bytes(sealed))


def test_many_python_threads_share_one_key(kernel):
    """One ipsec-mb manager per thread: concurrent calls on many threads stay correct."""
    key = os.urandom(32)
    data = os.urandom(3 * 16384 * 64 + 11)
    expected = shardseal.encrypt(data, key, threads=1)
    errors: list = []

    def work():
        try:
            for _ in range(5):
                blob = shardseal.encrypt(data, key, threads=2)
                assert shardseal.decrypt(blob, key, threads=2) == data
                assert len(blob) == len(expected)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors


# --- selection --------------------------------------------------------------------------------


def test_auto_picks_ipsec_mb_where_it_runs():
    status = NATIVE.kernel_status()
    assert status["openssl"] is None
    expected = "ipsec-mb" if status["ipsec-mb"] is None else "openssl"
    out = _run_python("import shardseal; print(shardseal.backend_info()['kernel'])", SHARDSEAL_KERNEL="auto")
    assert out.strip() == expected


@pytest.mark.parametrize("name", ["openssl", "ipsec-mb"])
def test_shardseal_kernel_forces_a_kernel(name):
    if NATIVE.kernel_status()[name] is not None:
        pytest.skip(f"{name} unavailable here")
    out = _run_python("import shardseal; i = shardseal.backend_info(); print(i['backend'], i['kernel'])",
                      SHARDSEAL_KERNEL=name)
    assert out.split() == ["native", name]


def test_forcing_an_unavailable_kernel_is_a_clear_import_error():
    class FakeNative:
        @staticmethod
        def kernel_status():
            return {"openssl": None, "ipsec-mb": "the CPU lacks VAES/VPCLMULQDQ"}

        @staticmethod
        def select_kernel(name):
            raise AssertionError("must not be called")

    with pytest.raises(ImportError, match="SHARDSEAL_KERNEL=ipsec-mb .*the CPU lacks VAES"):
        _backend._select_kernel(FakeNative, "ipsec-mb")
    with pytest.raises(ValueError, match="SHARDSEAL_KERNEL must be one of"):
        _backend._select_kernel(FakeNative, "aesni")


def test_select_kernel_rejects_unknown_names():
    with pytest.raises(ValueError):
        NATIVE.select_kernel("aesni")


def test_backend_info_and_version_name_the_kernel():
    info = shardseal.backend_info()
    assert info["backend"] == _backend.name
    if info["backend"] == "native":
        assert info["kernel"] == NATIVE.kernel()
        assert set(info["kernels"]) == {"openssl", "ipsec-mb"}
    out = _run_python("import sys; from shardseal.__main__ import main; sys.argv = ['shardseal', '--version']; main()")
    assert f"AES-GCM kernel {NATIVE.kernel_status() and _default_kernel()}" in out


def _default_kernel() -> str:
    return "ipsec-mb" if NATIVE.kernel_status()["ipsec-mb"] is None else "openssl"


def _run_python(code: str, **env) -> str:
    full_env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, **env)
    full_env.pop("SHARDSEAL_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- benchmark helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_gcm_seal_is_real_aes_gcm(kernel, threads):
    src = np.frombuffer(os.urandom(100 * 16384 + 123), np.uint8)
    dst = np.zeros(len(src) + 101 * 16, np.uint8)
    assert NATIVE.bench_gcm_seal(kernel, src, dst, threads) == len(dst)
    aead = AESGCM(bytes(range(1, 33)))
    for i in (0, 57, 100):
        chunk = src[i * 16384:(i + 1) * 16384].tobytes()
        nonce = bytes(4) + i.to_bytes(8, "little")
        start = i * (16384 + 16)
        assert dst[start:start + len(chunk) + 16].tobytes() == aead.encrypt(nonce, chunk, None)


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_copy_copies(threads):
    src = np.frombuffer(os.urandom(5 * 16384 + 9), np.uint8)
    dst = np.zeros(len(src), np.uint8)
    NATIVE.bench_copy(src, dst, threads)
    assert np.array_equal(src, dst)
