"""degradations package: the batched Real-ESRGAN degradation and its pieces."""
from .real_esrgan import RealESRGANDegradation, quantize_8bit
from .usm import usm_sharpen

__all__ = ['RealESRGANDegradation', 'quantize_8bit', 'usm_sharpen']
