"""Calls that mypy must reject: each wrong line ends with `# expect: <mypy error code>`.

Checked by tests/test_typing.py (never run, never imported).
"""

import os

import numpy as np

import shardseal
from shardseal import keyring

key = shardseal.generate_key()
blob = shardseal.encrypt(b"weights", key)
path = "weights.sseal"
ring: keyring.Keyring  # declared only: mypy reads this file, nothing runs it

shardseal.encrypt("text, not bytes", key)  # expect: arg-type
shardseal.decrypt(blob, key.hex())  # expect: arg-type
shardseal.open(path, "r", key=key)  # expect: call-overload
shardseal.open(path, "w", key=key)  # expect: call-overload
shardseal.open(path, "rb", key=key, recipients=["ssealx1..."])  # expect: call-overload
shardseal.open(path, "wb", key=key, identities=[ring])  # expect: call-overload
shardseal.encrypt(b"data", key, metadata=1)  # expect: arg-type
shardseal.encrypt(b"data", key, suite=192)  # expect: arg-type
shardseal.encrypt(b"data", key, threads="4")  # expect: arg-type
shardseal.encrypt(b"data", recipients=[1])  # expect: list-item
shardseal.decrypt(blob, identities=[1])  # expect: list-item
shardseal.encrypt_into(b"data", key, "out")  # expect: arg-type
shardseal.encrypt_array(np.zeros(3), key.hex())  # expect: arg-type
shardseal.decrypt_file("a.sseal", "a", key=os.environ["KEY"])  # expect: arg-type
shardseal.encrypt_file("a", "a.sseal", key, suite=512)  # expect: arg-type
shardseal.cobblestone.encrypt("text", key)  # expect: arg-type
shardseal.rotate("data/", key="not a key")  # expect: arg-type
text: str = shardseal.decrypt(blob, key)  # expect: assignment
writer_as_reader: shardseal.DecryptingReader = shardseal.open(path, "wb", key=key)  # expect: assignment
