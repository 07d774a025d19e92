"""Stopping a web-app request between tiles: on a cancel, or when its page goes away.

Gradio (6.x) cancels the asyncio task of a running event when its Cancel button,
``/cancel`` or ``gradio_client``'s ``job.cancel()`` asks, and fires the app's
``unload`` event when a page's heartbeat connection closes; neither can stop a
thread that computes. Here both become a :class:`StopRequest` that the inference
front door reads as ``should_stop`` after every tile.
"""
import asyncio
import contextlib
import contextvars
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from icmsr.apis import InferenceCancelled


class StopRequest:
    """The stop flag of one request, and the tile count when the stop was asked.

    The worker counts tiles with :meth:`tile_done`; whoever stops the request (a
    cancel, a closed page) calls :meth:`ask`, and the front door's ``should_stop``
    reads :meth:`asked` after every tile.
    """

    def __init__(self) -> None:
        self.tiles = 0
        self.asked_after: Optional[int] = None
        self.asked_at = 0.0
        self.reason = ''

    def tile_done(self) -> None:
        """Count one finished tile."""
        self.tiles += 1

    def ask(self, reason: str) -> None:
        """Ask the worker to stop after the tile in progress (the first reason is kept)."""
        if self.asked_after is None:
            self.asked_after, self.asked_at, self.reason = self.tiles, time.monotonic(), reason

    def asked(self) -> bool:
        """Whether a stop was asked (the front door's ``should_stop``)."""
        return self.asked_after is not None

    def report(self) -> str:
        """One line for the server log: when the stop was asked and when the work stopped."""
        return (f'request stopped ({self.reason}): stop asked after {self.asked_after} tile(s), '
                f'work stopped after {self.tiles} tile(s), '
                f'{time.monotonic() - self.asked_at:.2f} s later')


class RunningRequests:
    """Stop requests of the running jobs by browser session, so a page that goes away stops its work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: Dict[str, List[StopRequest]] = {}

    @contextlib.contextmanager
    def register(self, session: str) -> Iterator[StopRequest]:
        """A new stop request, known under ``session`` while the block runs."""
        stop = StopRequest()
        with self._lock:
            self._by_session.setdefault(session, []).append(stop)
        try:
            yield stop
        finally:
            with self._lock:
                self._by_session[session].remove(stop)
                if not self._by_session[session]:
                    del self._by_session[session]

    def stop_session(self, session: str, reason: str) -> None:
        """Ask every running job of ``session`` to stop."""
        with self._lock:
            stops = list(self._by_session.get(session, ()))
        for stop in stops:
            stop.ask(reason)


async def run_stoppable(work: Callable[[], Any], stop: StopRequest) -> Any:
    """Run ``work`` in a thread; if this coroutine is cancelled, stop the work and wait for it.

    Gradio cancels the task of a running event (its Cancel button, ``/cancel``,
    ``gradio_client``'s ``job.cancel()``) but cannot stop a thread: the work would
    go on beside the next request. So the cancellation is turned into a stop
    request, and the coroutine returns only once the work has stopped (after the
    tile in progress), which keeps the queue's worker slot until then.
    """
    # In Gradio's context (its progress tracker reads it), which threads do not inherit.
    future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.ask('cancelled')
        while not future.done():  # bounded: the work stops after its current tile
            try:
                await asyncio.wait({future})
            except asyncio.CancelledError:
                continue
        if not future.cancelled() and isinstance(future.exception(), InferenceCancelled):
            print(stop.report(), flush=True)
        raise
