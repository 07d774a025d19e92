"""engine package."""
from .loops import ExactResumeIterBasedTrainLoop  # noqa: E402,F401
from .nan_guard import (AmpNonFiniteGuardOptimWrapper, NonFiniteGuardHook,  # noqa: E402,F401
                        NonFiniteGuardOptimWrapper)
from .random_state import RandomStateHook  # noqa: E402,F401
from .visualization_hook import SRVisualizationHook  # noqa: E402,F401
from .multi_test_loop import MultiTestLoop, MultiValLoop  # noqa: E402,F401
from .optim_constructor import ICMSROptimWrapperConstructor  # noqa: F401
