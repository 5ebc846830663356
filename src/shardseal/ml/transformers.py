"""Hugging Face ``transformers`` models and PEFT adapters from encrypted checkpoints.

Install with ``pip install "shardseal[torch,transformers]"``. No plaintext file is written at
any point: the weights are decrypted into memory (``shardseal.checkpoint.load_checkpoint``) and
handed to ``transformers``' own ``from_pretrained`` as its ``state_dict=``, with the
configuration read from the folder. So ``transformers`` builds the model exactly as it does
from a plaintext folder (its dtype, tied weights, non-persistent buffers, device map):

    >>> import shardseal.transformers as sst
    >>> from transformers import AutoModelForCausalLM
    >>> model = sst.from_pretrained(AutoModelForCausalLM, "llama-sealed", key=key)
    >>> model = sst.load_adapter(model, "lora-sealed", key=key)      # a PEFT LoRA adapter

The folder is one that ``save_pretrained`` wrote and ``shardseal.checkpoint.encrypt_checkpoint``
encrypted (or ``save_pretrained`` below): ``config.json`` (plain), the sealed shards and index.
The configuration stays plain, as tools read it to pick a model class: it shows the
architecture (layer count, hidden sizes, vocabulary size), which the shard sizes largely show
anyway. For a PEFT adapter, ``adapter_config.json`` is plain too (the rank, the target modules
and the base model's name).

**The plain files are not authenticated.** Only the weights are: whoever can write the folder
can edit ``config.json`` (the activation, ``rope_theta``, norm epsilons, scaling) or
``adapter_config.json`` (``lora_alpha``, hence the adapter's scale) and the model loads
without an error and computes something else. Where that matters, pass ``config=`` from a
source you trust, or check the files' hashes against values you keep.

Memory: the decrypted state dict and the model exist together for a moment (as with
``state_dict=`` in ``transformers``): about twice the weights' size at the peak.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from .. import _redact
from . import checkpoint as _checkpoint
from ..keys.keyref import KeyLike
from ..keys.registry import Identities, Recipients

__all__ = ["ADAPTER_WEIGHTS_NAME", "from_pretrained", "load_adapter", "save_adapter", "save_pretrained"]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def from_pretrained(model_class: Any, folder: _checkpoint.Folder, *, key: Optional[KeyLike] = None,
                    identities: Optional[Identities] = None, config: Any = None,
                    threads: Optional[int] = None, **kwargs: Any) -> Any:
    """Loads a ``transformers`` model from an encrypted checkpoint folder, no plaintext file.

    Args:
        model_class: ``AutoModelForCausalLM`` (any ``AutoModel...``) or a model class such as
            ``LlamaForCausalLM``: anything with ``from_pretrained(None, config=, state_dict=)``.
        folder: the local folder: plain ``config.json``, sealed weights (see
            ``shardseal.checkpoint``).
        key: the 32-byte key, or a key reference.
        identities: identities to try after key.
        config: a configuration object to use instead of the folder's ``config.json``.
        threads: decryption threads; None uses every CPU.
        **kwargs: passed to ``from_pretrained`` (``dtype=``, ``device_map=``, ...); not
            ``state_dict``.

    Returns:
        The model, in eval mode, as ``from_pretrained`` returns it.

    Raises:
        FileNotFoundError: no ``config.json`` (and no config=) or no encrypted checkpoint.
        KeyNotFoundError, AuthenticationError, FormatError: as
            ``shardseal.checkpoint.load_checkpoint``.
        TypeError: state_dict among kwargs.
    """
    if "state_dict" in kwargs:
        raise TypeError("from_pretrained decrypts the state dict itself: do not pass state_dict=")
    import transformers

    if config is None:
        _require_local_file(folder, "config.json")
        config = transformers.AutoConfig.from_pretrained(os.fspath(folder), local_files_only=True)
    model_class = _concrete_class(model_class, config)
    state_dict = _checkpoint.load_checkpoint(folder, key=key, identities=identities, threads=threads)
    return model_class.from_pretrained(None, config=config, state_dict=state_dict, **kwargs)


def _require_local_file(folder: Any, name: str) -> None:
    """Raises FileNotFoundError unless the local folder holds name (transformers and PEFT would
    otherwise take a missing folder's name for a Hub repository id)."""
    if not os.path.isfile(os.path.join(os.fspath(folder), name)):
        raise FileNotFoundError(f"no {name} in the local folder {_redact.shown_argument(os.fspath(folder))}")


def _concrete_class(model_class: Any, config: Any) -> Any:
    """The model class an ``AutoModel...`` class picks for config (``from_pretrained(None,
    state_dict=)`` works on model classes only): the type of a model built on the meta
    device, which allocates no memory."""
    import torch
    import transformers

    if isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel):
        return model_class
    with torch.device("meta"):
        return type(model_class.from_config(config))


def save_pretrained(model: Any, folder: _checkpoint.Folder, *, key: Optional[KeyLike] = None,
                    recipients: Optional[Recipients] = None,
                    max_shard_size: Union[int, str] = _checkpoint.DEFAULT_MAX_SHARD_SIZE, seal_index: bool = True) -> list[str]:
    """Writes a ``transformers`` model as an encrypted checkpoint folder: its ``config.json``
    (and ``generation_config.json``) plain, the weights sealed. No plaintext weights file.

    Args:
        model: a ``transformers`` ``PreTrainedModel``.
        folder: the folder (created if missing).
        key: the 32-byte key, or a key reference.
        recipients: instead of key, envelope encryption.
        max_shard_size: as for ``shardseal.checkpoint.save_checkpoint``.
        seal_index: as for ``save_checkpoint``.

    Returns:
        The names of the files written.

    Raises:
        TypeError, ValueError, RuntimeError: as ``save_checkpoint``.
    """
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(os.fspath(folder))
    written = ["config.json"]
    generation = getattr(model, "generation_config", None)
    if generation is not None and getattr(model, "can_generate", lambda: False)():
        generation.save_pretrained(os.fspath(folder))
        written.append("generation_config.json")
    return written + _checkpoint.save_checkpoint(model.state_dict(), folder, key=key, recipients=recipients,
                                                 max_shard_size=max_shard_size, seal_index=seal_index)


def save_adapter(peft_model: Any, folder: _checkpoint.Folder, *, key: Optional[KeyLike] = None,
                 recipients: Optional[Recipients] = None,
                 adapter_name: str = "default") -> list[str]:
    """Writes a PEFT adapter (LoRA, ...) encrypted: ``adapter_config.json`` plain,
    ``adapter_model.safetensors.sseal`` sealed. No plaintext weights file.

    Args:
        peft_model: a ``peft.PeftModel``.
        folder: the folder (created if missing).
        key: the 32-byte key, or a key reference.
        recipients: instead of key, envelope encryption.
        adapter_name: which adapter of the model.

    Returns:
        The names of the files written.

    Raises:
        TypeError, ValueError: as ``save_checkpoint``.
    """
    import peft

    os.makedirs(folder, exist_ok=True)
    peft_model.peft_config[adapter_name].save_pretrained(os.fspath(folder))
    state = peft.get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    return ["adapter_config.json"] + _checkpoint.save_checkpoint(
        state, folder, key=key, recipients=recipients, weights_name=ADAPTER_WEIGHTS_NAME,
        max_shard_size=2**62)


def load_adapter(model: Any, folder: _checkpoint.Folder, *, key: Optional[KeyLike] = None,
                 identities: Optional[Identities] = None, adapter_name: str = "default",
                 is_trainable: bool = False) -> Any:
    """Applies an encrypted PEFT adapter to a model, no plaintext file.

    The adapter's configuration comes from the folder's plain ``adapter_config.json``, its
    weights from ``adapter_model.safetensors.sseal`` (``save_adapter``, or
    ``shardseal.checkpoint.encrypt_checkpoint(..., weights_name="adapter_model.safetensors")``
    of a folder PEFT's ``save_pretrained`` wrote).

    Args:
        model: the base model, or a ``peft.PeftModel`` to add another adapter to.
        folder: the adapter folder.
        key: the 32-byte key, or a key reference.
        identities: identities to try after key.
        adapter_name: the adapter's name in the model.
        is_trainable: False (the default) puts the adapter in inference mode, as PEFT's
            ``PeftModel.from_pretrained``.

    Returns:
        A ``peft.PeftModel`` with the adapter loaded (the same object when model was one).

    Raises:
        FileNotFoundError: no ``adapter_config.json`` or no encrypted adapter weights.
        KeyNotFoundError, AuthenticationError, FormatError: as ``load_checkpoint``.
        ValueError: adapter weights that do not fit the model (names PEFT does not expect).
    """
    import peft

    _require_local_file(folder, "adapter_config.json")  # else PEFT asks the Hub for the folder name
    config = peft.PeftConfig.from_pretrained(os.fspath(folder))
    config.inference_mode = not is_trainable
    state = _checkpoint.load_checkpoint(folder, key=key, identities=identities,
                                        weights_name=ADAPTER_WEIGHTS_NAME)
    if isinstance(model, peft.PeftModel):
        model.add_adapter(adapter_name, config)
        peft_model = model
    else:
        peft_model = peft.get_peft_model(model, config, adapter_name=adapter_name)
    result = peft.set_peft_model_state_dict(peft_model, state, adapter_name=adapter_name)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"the adapter holds weights this model has no place for: {unexpected[:5]}")
    if not is_trainable:
        peft_model.eval()
    return peft_model
