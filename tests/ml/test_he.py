"""shardseal.he: CKKS contexts, encrypted tensors in authenticated containers, HE FedAvg.

One context at the default parameters (N=8192, [60,40,40,60], scale 2^40) per module: the
precision bounds below are the documented ones (docs/he.md).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("tenseal", reason="the he extra")

import shardseal  # noqa: E402
import shardseal.he as he  # noqa: E402
from shardseal.ml.he import fedavg as he_fedavg  # noqa: E402

# Documented bounds: |error| <= FRESH_BOUND * max(1, max|x|) after encrypt/decrypt, and
# WEIGHTED_BOUND * max(1, max|x|) * sum|w| after one plaintext multiplication (weighted sums).
FRESH_BOUND = 1e-6
WEIGHTED_BOUND = 1e-5


@pytest.fixture(scope="module")
def secret():
    return he.SecretContext.generate()


@pytest.fixture(scope="module")
def public(secret):
    return he.PublicContext.from_bytes(secret.public_context().to_bytes(), fingerprint=secret.fingerprint)


@pytest.fixture(scope="module")
def key():
    return shardseal.generate_key()


def _bound(x: np.ndarray, factor: float = FRESH_BOUND) -> float:
    return factor * max(1.0, float(np.abs(x).max(initial=0.0)))


SHAPES = [(), (0,), (1,), (7,), (3, 5), (4095,), (4096,), (4097,), (2, 3, 4, 5), (8193,)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_numpy_float_round_trip_within_bound(secret, public, shape, dtype):
    x = (np.random.default_rng(1).normal(size=shape) * 10).astype(dtype)
    y = he.decrypt_tensor(he.encrypt_tensor(x, public), secret)
    assert y.dtype == x.dtype and y.shape == x.shape
    # float16's own rounding dominates: one ulp of the value
    tolerance = _bound(x) if dtype != "float16" else float(np.abs(x.astype(np.float64)).max(initial=0)) * 2**-10
    assert np.abs(y.astype(np.float64) - x.astype(np.float64)).max(initial=0.0) <= max(tolerance, _bound(x))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16", "bool"])
def test_numpy_integer_round_trip_is_exact(secret, public, dtype):
    rng = np.random.default_rng(2)
    if dtype == "bool":
        x = rng.integers(0, 2, size=(3, 7)).astype(bool)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -(2**19)), min(info.max, 2**19), size=(3, 7), endpoint=True).astype(dtype)
    y = he.decrypt_tensor(he.encrypt_tensor(x, public), secret)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16", "int64", "bool"])
def test_torch_round_trip(secret, public, dtype):
    torch = pytest.importorskip("torch")
    x = (torch.randn(4, 3, 2) * 5).to(getattr(torch, dtype))
    y = he.decrypt_tensor(he.encrypt_tensor(x, public), secret)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.shape == x.shape
    tolerance = 0.0 if dtype in ("int64", "bool") else max(_bound(x.double().numpy()), 0.06 if dtype == "bfloat16" else 0.01)
    assert (y.double() - x.double()).abs().max().item() <= tolerance


def test_unsupported_dtypes_are_a_type_error(public):
    with pytest.raises(TypeError, match="complex128"):
        he.encrypt_tensor(np.ones(3, np.complex128), public)
    with pytest.raises(ValueError, match="inf or nan"):
        he.encrypt_tensor(np.array([1.0, np.nan]), public)


def test_arithmetic_and_weighted_sum_within_bound(secret, public):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 100)), rng.normal(size=(50, 100))
    ea, eb = he.encrypt_tensor(a, public), he.encrypt_tensor(b, public)
    assert ea.num_ciphertexts == 2
    for got, want in [(ea + eb, a + b), (ea - eb, a - b), (-ea, -a)]:
        assert np.abs(he.decrypt_tensor(got, secret) - want).max() <= 2 * _bound(want)
    vector = rng.normal(size=a.shape)
    for got, want, weight in [(ea * 0.25, a * 0.25, 0.25), (3 * ea, 3 * a, 3), (ea * vector, a * vector, np.abs(vector).max()),
                              (he.weighted_sum([ea, eb], [0.3, 0.7]), 0.3 * a + 0.7 * b, 1.0), (ea * 0.0, a * 0, 0)]:
        assert np.abs(he.decrypt_tensor(got, secret) - want).max() <= _bound(a, WEIGHTED_BOUND) * max(weight, 1)


def test_incompatible_arithmetic_is_refused(public):
    with pytest.raises(ValueError, match="layouts"):
        he.encrypt_tensor(np.ones(3), public) + he.encrypt_tensor(np.ones(4), public)
    with pytest.raises(ValueError, match="values"):
        he.encrypt_tensor(np.ones(3), public) * np.ones(4)
    other = he.SecretContext.generate().public_context()
    with pytest.raises(ValueError, match="different contexts"):
        he.encrypt_tensor(np.ones(3), public) + he.encrypt_tensor(np.ones(3), other)


def test_a_transparent_result_is_a_value_error(public):
    encrypted = he.encrypt_tensor(np.ones(3), public)
    with pytest.raises(ValueError, match="transparent"):
        encrypted - encrypted


def test_dict_and_list_of_tensors(secret, public):
    model = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], np.int32)}
    out = he.decrypt_tensors(he.encrypt_tensors(model, public), secret)
    assert list(out) == ["w", "b"] and out["b"].dtype == np.int32
    np.testing.assert_allclose(out["w"], model["w"], atol=_bound(model["w"]))
    out = he.decrypt_tensors(he.encrypt_tensors([model["w"], model["b"]], public), secret)
    assert isinstance(out, list) and len(out) == 2


def test_public_context_cannot_decrypt(secret, public):
    encrypted = he.encrypt_tensor(np.ones(3), public)
    with pytest.raises(TypeError, match="PublicContext cannot decrypt"):
        he.decrypt_tensor(encrypted, public)
    assert not public.tenseal_context.is_private()


def test_public_context_is_pinned_by_its_fingerprint(secret):
    data = secret.public_context().to_bytes()
    other = he.SecretContext.generate()
    with pytest.raises(shardseal.AuthenticationError):
        he.PublicContext.from_bytes(other.public_context().to_bytes(), fingerprint=secret.fingerprint)
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 1
    with pytest.raises(shardseal.AuthenticationError):
        he.PublicContext.from_bytes(bytes(tampered), fingerprint=secret.fingerprint)


def test_secret_bytes_are_refused_as_a_public_context():
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 20, 40])
    data = ctx.serialize(save_secret_key=True)
    with pytest.raises(ValueError, match="secret key"):
        he.PublicContext.from_bytes(data, fingerprint=he.fingerprint_of(data))


def test_secret_context_is_sealed_for_recipients(secret, public):
    x25519 = pytest.importorskip("shardseal.x25519")
    identity = x25519.X25519Identity.generate()
    sealed = secret.seal(recipients=[identity.recipient])
    assert b"secret" not in sealed[:64]
    opened = he.SecretContext.open(sealed, identities=[identity])
    assert opened.fingerprint == secret.fingerprint
    encrypted = he.encrypt_tensor(np.arange(5.0), public)
    np.testing.assert_allclose(he.decrypt_tensor(encrypted, opened), np.arange(5.0), atol=FRESH_BOUND)
    with pytest.raises(shardseal.KeyNotFoundError):  # not a recipient
        he.SecretContext.open(sealed, identities=[x25519.X25519Identity.generate()])
    info = shardseal.inspect(sealed)
    assert info.metadata["shardseal.he"]["fingerprint"] == secret.fingerprint


def test_secret_context_does_not_pickle_or_show_its_key(secret):
    with pytest.raises(TypeError, match="does not pickle"):
        pickle.dumps(secret)
    assert "hidden" in repr(secret)


def test_sealed_tensor_round_trip_and_identity(secret, public, key):
    x = np.random.default_rng(4).normal(size=(10, 1000)).astype(np.float32)
    sealed = he.encrypt_tensor(x, public).seal(name="layer.0/round=1", key=key)
    opened = he.open_tensor(sealed, public, name="layer.0/round=1", key=key)
    assert opened.name == "layer.0/round=1"
    assert np.abs(he.decrypt_tensor(opened, secret) - x).max() <= _bound(x)
    with pytest.raises(shardseal.AuthenticationError):  # swapped: authentic, but another tensor
        he.open_tensor(sealed, public, name="layer.1/round=1", key=key)


@pytest.mark.parametrize("where", ["metadata", "first ciphertext", "middle", "last byte"])
def test_tampered_ciphertext_is_an_authentication_error(public, key, where):
    sealed = bytearray(he.encrypt_tensor(np.ones(5000), public).seal(name="t", key=key))
    header = shardseal.inspect(bytes(sealed)).header_size
    if where == "metadata":  # still valid JSON: one hex digit of the fingerprint changed
        index = bytes(sealed).index(b"sha256:") + 7
        sealed[index] = ord("0") if sealed[index] != ord("0") else ord("1")
    else:
        index = {"first ciphertext": header + 200, "middle": len(sealed) // 2, "last byte": len(sealed) - 1}[where]
        sealed[index] ^= 0x01
    with pytest.raises(shardseal.AuthenticationError):
        he.open_tensor(bytes(sealed), public, name="t", key=key)


def test_tensor_under_another_context_is_refused(key):
    a, b = he.SecretContext.generate(), he.SecretContext.generate()
    sealed = he.encrypt_tensor(np.ones(3), a.public_context()).seal(name="t", key=key)
    with pytest.raises(shardseal.AuthenticationError):
        he.open_tensor(sealed, b.public_context(), name="t", key=key)
    with pytest.raises(shardseal.FormatError):
        he.open_tensor(shardseal.encrypt(b"not a tensor", key), a.public_context(), name="t", key=key)


# --- federated averaging: the server holds the public context only --------------------------

def test_aggregator_refuses_the_secret_context(secret, key):
    with pytest.raises(TypeError, match="PublicContext only"):
        he.HEAggregator(secret, key=key)
    with pytest.raises(TypeError, match="PublicContext only"):
        he.HEAggregator(object(), key=key)


def test_fedavg_round_equals_plaintext_and_server_never_receives_the_secret(secret, public, key, monkeypatch):
    received = []  # every context that reached the server-side code (open_tensor's argument)
    real_open = he_fedavg.open_tensor
    monkeypatch.setattr(he_fedavg, "open_tensor", lambda blob, context, **kw: (received.append(context),
                                                                               real_open(blob, context, **kw))[1])
    rng = np.random.default_rng(5)
    updates = [[rng.normal(size=(30, 40)).astype(np.float32), rng.normal(size=40).astype(np.float32)] for _ in range(3)]
    counts = [10, 20, 70]
    sealed = [(he.encrypt_tensors(u, public).seal(name=he.update_name(1, f"c{i}"), key=key), n)
              for i, (u, n) in enumerate(zip(updates, counts))]
    server = he.HEAggregator(public, key=key)
    aggregate = server.aggregate(sealed, server_round=1)
    got = he.decrypt_tensors(he.open_tensor(aggregate, secret, name=he.aggregate_name(1), key=key), secret)
    for k in range(2):
        want = sum(u[k].astype(np.float64) * n for u, n in zip(updates, counts)) / sum(counts)
        assert np.abs(got[k] - want).max() <= _bound(want, WEIGHTED_BOUND)
    assert received and all(type(c) is he.PublicContext and not c.tenseal_context.is_private() for c in received)


def test_fedavg_refuses_replayed_and_stale_updates(public, key):
    update = he.encrypt_tensor(np.ones(4), public)
    server = he.HEAggregator(public, key=key)
    first = update.seal(name=he.update_name(2, "c0"), key=key)
    with pytest.raises(shardseal.AuthenticationError):  # the same client twice in a round
        server.aggregate([(first, 1), (first, 1)], server_round=2)
    with pytest.raises(shardseal.AuthenticationError):  # an update of round 1 replayed in round 2
        server.aggregate([(update.seal(name=he.update_name(1, "c1"), key=key), 1)], server_round=2)


def test_imports_stay_lazy():
    pytest.importorskip("flwr", reason="the he extra (Flower)")
    import subprocess
    import sys

    from ..cli_helpers import child_env

    code = ("import sys, shardseal; assert 'tenseal' not in sys.modules; import shardseal.he as he; "
            "assert 'flwr' not in sys.modules; he.HEFedAvg; assert 'flwr' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("weights", [(-1.0, 2.0), (float("inf"), 1.0), (1.0, float("nan"))])
def test_fedavg_refuses_negative_or_non_finite_weights(public, key, weights):
    # A negative weight (a tampered or malicious num_examples) with a positive total passed:
    # the "average" then amplifies one client's update instead of averaging.
    server = he.HEAggregator(public, key=key)
    updates = [(he.encrypt_tensor(np.ones(4), public).seal(name=he.update_name(1, f"c{i}"), key=key), w)
               for i, w in enumerate(weights)]
    with pytest.raises(ValueError, match="non-negative"):
        server.aggregate(updates, server_round=1)
