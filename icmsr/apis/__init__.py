"""Inference API: build the one-step SR model from a config or an export, super-resolve any-size images."""
from icmsr.utils.tiling import TileSettings  # noqa: F401
from .fuse import fuse_generator_lora  # noqa: F401
from .image_sr import (InferenceCancelled, InputTooLargeError, image_to_tensor,  # noqa: F401
                       super_resolve_image, super_resolve_tensor)
from .inferencer import InferenceSummary, SRInferencer, save_image  # noqa: F401
from .inputs import PromptSource, collect_inputs, output_name  # noqa: F401
from .lora_export import (build_model_from_export, export_model, load_model_lora,  # noqa: F401
                          read_description)
from .model_loading import UntrainedModelError, default_device, init_model  # noqa: F401
from .diffusers_export import load_export_extras  # noqa: F401


def __getattr__(name: str):
    # The diffusers pipeline class imports diffusers: only load it when asked for.
    if name == 'ICMSRPipeline':
        from .diffusers_pipeline import ICMSRPipeline
        return ICMSRPipeline
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
