"""ICM-SR model: the one-step SR model, its training extension, their components and builders."""
from . import backbones  # noqa: F401  (registers the SD* component builders)
from .aux_diffusion import AuxDiffusion  # noqa: F401
from .conditions import ConditionExtractor  # noqa: F401
from .data_preprocessor import SRDataPreprocessor  # noqa: F401
from .generator import OneStepGenerator  # noqa: F401
from .icmsr import ICMSR  # noqa: F401
from .losses import LPIPSLoss  # noqa: F401
from .one_step_sr import OneStepSR  # noqa: F401
from . import prompt_extractors  # noqa: F401  (RAMTagger, HFCaptioner; heavy imports lazy)
from .regularizer import VSDRegularizer  # noqa: F401
from .teacher_condition import TeacherCondition  # noqa: F401
from .text import PromptEncoder  # noqa: F401
from .tsd_regularizer import TSDRegularizer  # noqa: F401
