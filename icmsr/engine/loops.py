"""Iteration-based training loop whose resume repeats the uninterrupted run exactly."""
from typing import Iterator

from mmengine.runner import IterBasedTrainLoop

from icmsr.registry import LOOPS


class _RestoreBeforeFirstNewBatch:
    """Wrap the loop's batch iterator; call the restore hooks before the first new batch.

    On resume, MMEngine's ``IterBasedTrainLoop.run`` replays the dataloader for
    ``loop.iter`` batches and then fetches the first batch to train on, all in
    one method. Fetching draws random numbers (crops, flips of the main-process
    pipeline), so the saved random streams must be back *between* the replay
    and that fetch. The iterator is the one object both pass through: it counts
    the replayed batches (``loop.iter`` of them, read at the first call) and
    restores just before handing out the next one.

    Args:
        iterator: The loop's ``dataloader_iterator``.
        loop: The training loop (for ``iter`` and ``runner``).
    """

    def __init__(self, iterator: Iterator, loop: IterBasedTrainLoop) -> None:
        self.iterator = iterator
        self.loop = loop
        self._replay_left = None

    def __iter__(self) -> '_RestoreBeforeFirstNewBatch':
        return self

    def __next__(self):
        if self._replay_left is None:
            self._replay_left = self.loop.iter  # resumed iteration (0 for a fresh run)
        if self._replay_left == 0:
            self._replay_left = -1
            from icmsr.engine.random_state import RandomStateHook
            for hook in self.loop.runner.hooks:
                if isinstance(hook, RandomStateHook):
                    hook.restore_pending(self.loop.runner)
        elif self._replay_left > 0:
            self._replay_left -= 1
        return next(self.iterator)


@LOOPS.register_module()
class ExactResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that restores the saved random streams after the data replay.

    On resume MMEngine replays the dataloader up to the saved iteration (so
    the sampler order and per-worker augmentation streams line up), and this
    replay draws random numbers in the main process. Random states restored
    before it would be consumed by it; restored after it, the next batch and
    the next training step see exactly the streams of the uninterrupted run.
    The restoring is done by :class:`~icmsr.engine.random_state.RandomStateHook`
    (:meth:`~icmsr.engine.random_state.RandomStateHook.restore_pending`), called
    by a thin wrapper of the loop's ``dataloader_iterator`` just before the
    first batch after the replay is fetched. MMEngine's ``run`` is used as it is.

    Args are those of :class:`mmengine.runner.IterBasedTrainLoop`.
    """

    #: Read by RandomStateHook: this loop restores the states itself.
    restores_random_state = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataloader_iterator = _RestoreBeforeFirstNewBatch(self.dataloader_iterator, self)
