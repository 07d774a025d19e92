"""models package."""
from .conditions import ConditionExtractor  # noqa: F401
