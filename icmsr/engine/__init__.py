"""Runner parts: training/test loops, hooks, guarded optimizer wrappers, optimizer constructor."""
from .checkpoint_io import AtomicCheckpointHook, use_atomic_local_backend  # noqa: F401
from .loops import ExactResumeIterBasedTrainLoop  # noqa: F401
from .nan_guard import (AmpNonFiniteGuardOptimWrapper, NonFiniteGuardHook,  # noqa: F401
                        NonFiniteGuardOptimWrapper)
from .random_state import RandomStateHook  # noqa: F401
from .visualization_hook import SRVisualizationHook  # noqa: F401
from .multi_test_loop import MultiTestLoop, MultiValLoop  # noqa: F401
from .optim_constructor import ICMSROptimWrapperConstructor  # noqa: F401
from .optimizers import build_adamw_8bit  # noqa: F401  (registers 'AdamW8bit')
from .amp import AutocastNonFiniteGuardOptimWrapper  # noqa: F401

# Every checkpoint MMEngine writes to a local path is written atomically.
use_atomic_local_backend()
