"""Environment variables set for one block of code."""
import contextlib
import os
from typing import Dict, Iterator, Optional


@contextlib.contextmanager
def temporary_environ(values: Dict[str, Optional[str]]) -> Iterator[None]:
    """Set (a string) or unset (None) environment variables for the block, then restore them.

    Args:
        values: Variable names and their values inside the block.

    Yields:
        Nothing.
    """
    previous = {key: os.environ.get(key) for key in values}

    def apply(settings: Dict[str, Optional[str]]) -> None:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    apply(values)
    try:
        yield
    finally:
        apply(previous)
