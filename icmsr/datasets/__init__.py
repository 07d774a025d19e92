"""Datasets: HQ training images, paired test sets, robust image loading, pipeline transforms."""
from .base_sr_dataset import BadImageWarning, BaseSRDataset
from .hq_image_dataset import HQImageDataset
from icmsr.fileio.image_io import IMAGE_EXTENSIONS, ImageLoadError, load_image_rgb
from .paired_image_dataset import PairedImageDataset
from .transforms import LoadImageFromFile, PackSRInputs, RandomCropPad, RandomFlip

__all__ = [
    'BadImageWarning', 'BaseSRDataset', 'HQImageDataset', 'PairedImageDataset',
    'IMAGE_EXTENSIONS', 'ImageLoadError', 'load_image_rgb', 'LoadImageFromFile', 'PackSRInputs',
    'RandomCropPad', 'RandomFlip',
]
