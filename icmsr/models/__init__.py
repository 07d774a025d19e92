"""ICM-SR model: generator, regularizer, auxiliary diffusion, conditions, losses, builders."""
from .conditions import ConditionExtractor  # noqa: F401
from . import backbones  # noqa: F401  (registers the SD* component builders)
from .aux_diffusion import AuxDiffusion  # noqa: F401
from .data_preprocessor import SRDataPreprocessor  # noqa: F401
from .generator import OneStepGenerator  # noqa: F401
from .icmsr import ICMSR  # noqa: F401
from .losses import LPIPSLoss  # noqa: F401
from .regularizer import VSDRegularizer  # noqa: F401
from .text import PromptEncoder  # noqa: F401
from .tsd_regularizer import TSDRegularizer  # noqa: F401
from .tiny import icmsr_model_config, tiny_icmsr_config  # noqa: F401
