"""engine package."""
from .loops import ExactResumeIterBasedTrainLoop  # noqa: E402,F401
from .nan_guard import (AmpNonFiniteGuardOptimWrapper, NonFiniteGuardHook,  # noqa: E402,F401
                        NonFiniteGuardOptimWrapper)
from .random_state import RandomStateHook  # noqa: E402,F401
from .visualization_hook import SRVisualizationHook  # noqa: E402,F401
