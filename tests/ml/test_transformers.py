"""shardseal.transformers: a tiny model built from a config (no hub access) and a PEFT LoRA
adapter, loaded from encrypted folders with no plaintext file anywhere; logits equal."""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import shardseal
import shardseal.checkpoint as ck
import shardseal.transformers as sst
from shardseal.errors import AuthenticationError

from .test_checkpoint import TempWatch, listing, no_plaintext_weights


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_config():
    return transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(tiny_config()).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[1, 5, 9, 33, 77, 127, 0, 4], [2, 2, 3, 100, 64, 8, 9, 1]])


def test_from_pretrained_equals_plaintext_with_no_plaintext_file(tmp_path, tiny_model, monkeypatch):
    key = shardseal.generate_key()
    folder = tmp_path / "model"
    written = sst.save_pretrained(tiny_model, folder, key=key, max_shard_size=20_000)
    assert "model.safetensors.index.json.sseal" in written and len(written) > 4
    no_plaintext_weights(folder)
    folder_before, watch = listing(folder), TempWatch(monkeypatch, tmp_path)
    model = sst.from_pretrained(transformers.AutoModelForCausalLM, folder, key=key)
    assert type(model) is type(tiny_model) and not model.training
    assert torch.equal(logits(model, IDS), logits(tiny_model, IDS))
    # The tied weights are tied again, as transformers does from a plaintext folder.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert listing(folder) == folder_before
    watch.check()


def test_encrypted_save_pretrained_folder(tmp_path, tiny_model):
    key = shardseal.generate_key()
    tiny_model.save_pretrained(tmp_path / "plain", max_shard_size="20KB")
    ck.encrypt_checkpoint(tmp_path / "plain", tmp_path / "sealed", key=key)
    no_plaintext_weights(tmp_path / "sealed")
    model = sst.from_pretrained(transformers.LlamaForCausalLM, tmp_path / "sealed", key=key)
    assert torch.equal(logits(model, IDS), logits(tiny_model, IDS))
    with pytest.raises(shardseal.KeyNotFoundError):
        sst.from_pretrained(transformers.AutoModelForCausalLM, tmp_path / "sealed", key=shardseal.generate_key())


def test_tampered_shard_fails_from_pretrained(tmp_path, tiny_model):
    key = shardseal.generate_key()
    sst.save_pretrained(tiny_model, tmp_path, key=key, max_shard_size=20_000)
    shard = tmp_path / "model-00002-of-00006.safetensors.sseal"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(AuthenticationError):
        sst.from_pretrained(transformers.AutoModelForCausalLM, tmp_path, key=key)


def test_state_dict_keyword_is_refused(tmp_path):
    with pytest.raises(TypeError, match="state_dict"):
        sst.from_pretrained(transformers.AutoModelForCausalLM, tmp_path, key=bytes(32), state_dict={})


def test_lora_adapter(tmp_path, tiny_model, monkeypatch):
    peft = pytest.importorskip("peft")
    key = shardseal.generate_key()
    lora = peft.get_peft_model(copy.deepcopy(tiny_model),
                               peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.eval()
    expected = logits(lora, IDS)
    assert not torch.equal(expected, logits(tiny_model, IDS))  # the adapter changes the outputs

    written = sst.save_adapter(lora, tmp_path / "adapter", key=key)
    assert sorted(written) == ["adapter_config.json", "adapter_model.safetensors.sseal"]
    no_plaintext_weights(tmp_path / "adapter")
    sst.save_pretrained(tiny_model, tmp_path / "base", key=key)
    watch = TempWatch(monkeypatch, tmp_path / "watch")

    base = sst.from_pretrained(transformers.AutoModelForCausalLM, tmp_path / "base", key=key)
    loaded = sst.load_adapter(base, tmp_path / "adapter", key=key)
    assert isinstance(loaded, peft.PeftModel)
    assert torch.equal(logits(loaded, IDS), expected)
    watch.check()

    # An adapter folder that PEFT wrote, encrypted afterwards, loads the same way.
    lora.save_pretrained(tmp_path / "peft-plain")
    ck.encrypt_checkpoint(tmp_path / "peft-plain", tmp_path / "peft-sealed", key=key,
                          weights_name=sst.ADAPTER_WEIGHTS_NAME)
    assert "adapter_model.safetensors" not in os.listdir(tmp_path / "peft-sealed")
    again = sst.load_adapter(copy.deepcopy(tiny_model), tmp_path / "peft-sealed", key=key)
    assert torch.equal(logits(again, IDS), expected)


def test_missing_config_is_a_file_not_found_error(tmp_path, tiny_model, monkeypatch):
    # Documented as FileNotFoundError; transformers' own error was a bare OSError, and PEFT's a
    # ValueError after it had asked the Hub for the folder name as a repository id.
    pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        sst.from_pretrained(transformers.AutoModelForCausalLM, "no-such/model", key=shardseal.generate_key())
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        sst.load_adapter(copy.deepcopy(tiny_model), "no-such/adapter", key=shardseal.generate_key())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        sst.from_pretrained(transformers.AutoModelForCausalLM, tmp_path / "empty", key=shardseal.generate_key())


def test_a_key_passed_as_the_folder_is_not_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    secret = shardseal.generate_key().hex()
    with pytest.raises(FileNotFoundError) as info:
        sst.from_pretrained(transformers.AutoModelForCausalLM, secret, key=shardseal.generate_key())
    assert secret not in str(info.value) and secret[:16] not in str(info.value)
