"""Large messages: past 4 GiB, where 32-bit length or offset arithmetic would break.
Run with ``pytest -m slow`` (about 15 GiB of memory, a minute or two)."""

from __future__ import annotations

import numpy as np
import pytest

import shardseal

pytestmark = pytest.mark.slow


def test_message_past_4_gib_round_trips_natively(key):
    if shardseal.backend != "native":
        pytest.skip("the Python backend would take minutes")
    size = 4 * 2**30 + 2**20 + 5
    data = np.ones(size, np.uint8)
    data[::4096] = np.arange(0, size, 4096) % 251  # a distinct pattern per page
    blob = np.empty(shardseal.encrypted_size(size), np.uint8)
    shardseal.encrypt_into(data, key, blob)
    del data
    back = np.empty(size, np.uint8)
    assert shardseal.decrypt_into(blob, key, back) == size
    assert (back[::4096] == np.arange(0, size, 4096) % 251).all()
    assert back[1] == 1 and back[-1] == 1
    blob[-20] ^= 1
    with pytest.raises(shardseal.AuthenticationError):
        shardseal.decrypt_into(blob, key, back)
    assert not back[:: 2**20].any()  # zeroed: no plaintext released
