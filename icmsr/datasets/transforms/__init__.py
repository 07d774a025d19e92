"""Pipeline transforms, registered in ``icmsr.registry.TRANSFORMS``."""
from .formatting import PackSRInputs
from .geometric import RandomCropPad, RandomFlip
from .loading import LoadImageFromFile

__all__ = ['LoadImageFromFile', 'RandomCropPad', 'RandomFlip', 'PackSRInputs']
