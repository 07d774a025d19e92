"""Iteration-based training loop whose resume repeats the uninterrupted run exactly."""
from typing import Iterator

from mmengine.runner import IterBasedTrainLoop

from icmsr.registry import LOOPS


class _AnnounceEndOfReplay:
    """Wrap the loop's batch iterator; call ``after_data_replay`` before the first new batch.

    MMEngine's ``IterBasedTrainLoop.run`` replays the dataloader for ``loop.iter``
    batches and then fetches the first batch to train on, all in one method. The
    iterator is the one object both pass through: it counts the replayed batches
    (``loop.iter`` of them, read at the first call) and, just before handing out
    the next one, calls the hooks' ``after_data_replay`` through the runner.

    Args:
        iterator: The loop's ``dataloader_iterator``.
        loop: The training loop (for ``iter`` and ``runner``).
    """

    def __init__(self, iterator: Iterator, loop: IterBasedTrainLoop) -> None:
        self.iterator = iterator
        self.loop = loop
        self._replay_left = None

    def __iter__(self) -> '_AnnounceEndOfReplay':
        return self

    def __next__(self):
        if self._replay_left is None:
            self._replay_left = self.loop.iter  # resumed iteration (0 for a fresh run)
        if self._replay_left == 0:
            self._replay_left = -1
            self.loop.runner.call_hook('after_data_replay')
        elif self._replay_left > 0:
            self._replay_left -= 1
        return next(self.iterator)


@LOOPS.register_module()
class ExactResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that tells the hooks when the resume's data replay is over.

    On resume MMEngine replays the dataloader up to the saved iteration (so the
    sampler order and per-worker augmentation streams line up), and the replay
    draws random numbers in the main process. Random states restored before it
    would be consumed by it; restored after it, the next batch and the next
    training step see exactly the streams of the uninterrupted run. This loop
    calls the hook method ``after_data_replay(runner)`` (through
    ``runner.call_hook``, MMEngine's way for custom hook methods) just before the
    first batch after the replay is fetched, also on a fresh start;
    :class:`~icmsr.engine.random_state.RandomStateHook` restores the states there.
    MMEngine's ``run`` is used as it is.

    Args are those of :class:`mmengine.runner.IterBasedTrainLoop`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataloader_iterator = _AnnounceEndOfReplay(self.dataloader_iterator, self)
