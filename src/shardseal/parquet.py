"""``shardseal.parquet``, the documented import path of ``shardseal.ml.parquet``.

Parquet Modular Encryption with shardseal keys (the ``parquet`` extra: pyarrow).

The code lives in ``shardseal.ml.parquet`` (docs/ARCHITECTURE.md); this module re-exports its
public names, so that user code keeps the short path.
"""

from .ml.parquet import (  # noqa: F401
    ALGORITHMS,
    KEY_MATERIAL_PREFIX,
    METADATA_KEY,
    ParquetAuthenticationError,
    ShardsealKmsClient,
    crypto_factory,
    dataset,
    decryption_properties,
    encryption_configuration,
    encryption_properties,
    has_external_key_material,
    master_key_id,
    master_key_name,
    read_dataset,
    read_table,
    recover_interrupted_rotation,
    rotate_master_keys,
    write_dataset,
    write_table,
)

__all__ = [
    "ALGORITHMS",
    "KEY_MATERIAL_PREFIX",
    "METADATA_KEY",
    "ParquetAuthenticationError",
    "ShardsealKmsClient",
    "crypto_factory",
    "dataset",
    "decryption_properties",
    "encryption_configuration",
    "encryption_properties",
    "has_external_key_material",
    "master_key_id",
    "master_key_name",
    "read_dataset",
    "read_table",
    "recover_interrupted_rotation",
    "rotate_master_keys",
    "write_dataset",
    "write_table",
]
