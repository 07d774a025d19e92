"""ICM-SR: one-step diffusion super-resolution with image-conditioned manifold regularization."""
from . import compat
from .version import __version__

compat.apply()

__all__ = ['__version__']
