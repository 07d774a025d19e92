"""Inference API: build the generator from a config or an export, super-resolve any-size images."""
from .fuse import fuse_generator_lora  # noqa: F401
from .inferencer import InferenceSummary, SRInferencer, save_image, super_resolve_image  # noqa: F401
from .inputs import PromptSource, collect_inputs, output_name  # noqa: F401
from .lora_export import (build_generator_from_export, describe_generator,  # noqa: F401
                          export_generator, load_generator_lora, read_description)
from .model_loading import SRInferenceModel, init_model  # noqa: F401
from .pipeline import TiledSuperResolver, TileSettings  # noqa: F401
