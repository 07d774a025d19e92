"""Is the network there? One quick probe, so offline runs fail in a second, not after retries.

Downloads through ``huggingface_hub`` retry for about 40 s before failing when
there is no network. The tools ask :func:`hub_reachable` once and, offline, set
``HF_HUB_OFFLINE=1`` (:func:`go_offline_if_unreachable`), so a missing file is
reported at once with the toolkit's own message.
"""
import os
import socket
import threading
from typing import Optional

_TRUE = ('1', 'true', 'yes', 'on')
_cached: Optional[bool] = None


def offline_requested() -> bool:
    """Whether the user declared the machine offline (``HF_HUB_OFFLINE`` / ``ICMSR_OFFLINE``).

    Returns:
        True when either variable is set to a true value.
    """
    return any(os.environ.get(k, '').strip().lower() in _TRUE
               for k in ('HF_HUB_OFFLINE', 'ICMSR_OFFLINE'))


def hub_reachable(host: str = 'huggingface.co', port: int = 443, timeout: float = 2.0) -> bool:
    """Tell, once per process, whether a TCP connection to the model hub opens.

    Args:
        host: Host to probe.
        port: Port to probe.
        timeout: Seconds to wait (name resolution included by the OS resolver).

    Returns:
        False when offline is requested or the connection fails.
    """
    global _cached
    if offline_requested():
        return False
    if _cached is None:
        result = []

        def probe() -> None:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    result.append(True)
            except Exception:  # DNS failure, refused, timeout, or a test's socket guard
                result.append(False)

        # Name resolution ignores the socket timeout; bound the whole probe.
        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout)
        _cached = bool(result and result[0])
    return _cached


def go_offline_if_unreachable() -> bool:
    """Set ``HF_HUB_OFFLINE=1`` when the hub cannot be reached, so nothing retries.

    Returns:
        Whether the process is now offline.
    """
    if hub_reachable():
        return False
    os.environ['HF_HUB_OFFLINE'] = '1'
    return True
