"""degradations package: the batched Real-ESRGAN degradation and its pieces."""
from .real_esrgan import RealESRGANDegradation, quantize_8bit

__all__ = ['RealESRGANDegradation', 'quantize_8bit']
