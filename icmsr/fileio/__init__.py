"""Reading what users point the toolkit at: images, folders of images, captions.

Datasets, the inference front door and the folder evaluator all read files the
same way, so the readers live here, below all three.
"""
from .captions import load_captions, lookup_caption
from .file_lists import scan_images
from .image_io import IMAGE_EXTENSIONS, ImageLoadError, load_image_rgb

__all__ = ['IMAGE_EXTENSIONS', 'ImageLoadError', 'load_image_rgb', 'load_captions',
           'lookup_caption', 'scan_images']
