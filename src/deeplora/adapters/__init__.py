"""Deep LoRA adapters for PyTorch / Hugging Face transformers, as a PEFT method.

Importing this package registers Deep LoRA with PEFT, so that::

    from peft import get_peft_model
    from deeplora import DeepLoraConfig

    model = get_peft_model(model, DeepLoraConfig(r=8, depth=3, target_modules="all-linear"))

works like any built-in PEFT method (``save_pretrained``, ``PeftModel.from_pretrained``,
``merge_and_unload``). See ``docs/adapters.md``.
"""

from deeplora.adapters.baselines import METHODS, build_adapter_config, embedded_model_path
from deeplora.adapters.compress import adapter_param_groups, compress_adapters, compressed_factors
from deeplora.adapters.config import DeepLoraConfig
from deeplora.adapters.export import export_lora, load_deeplora
from deeplora.adapters.inspection import (
    adapter_numerical_ranks,
    adapter_principal_angles,
    adapter_singular_values,
    adapter_subspace_cosines,
)
from deeplora.adapters.loading import check_adapter_folder, load_adapter
from deeplora.adapters.peft_integration import (
    DeepLoraLayer,
    DeepLoraModel,
    adapter_deltas,
    adapter_factorizations,
)
from deeplora.adapters.targets import PRESETS, register_preset, resolve_target_modules

__all__ = [
    "METHODS",
    "PRESETS",
    "DeepLoraConfig",
    "DeepLoraLayer",
    "DeepLoraModel",
    "adapter_deltas",
    "adapter_factorizations",
    "adapter_numerical_ranks",
    "adapter_param_groups",
    "adapter_principal_angles",
    "adapter_singular_values",
    "adapter_subspace_cosines",
    "build_adapter_config",
    "check_adapter_folder",
    "compress_adapters",
    "compressed_factors",
    "embedded_model_path",
    "export_lora",
    "load_adapter",
    "load_deeplora",
    "register_preset",
    "resolve_target_modules",
]
