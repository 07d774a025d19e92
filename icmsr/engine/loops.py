"""Iteration-based training loop whose resume repeats the uninterrupted run exactly."""
import logging
import time

from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from icmsr.registry import LOOPS


@LOOPS.register_module()
class ExactResumeIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that restores the saved random streams after the data replay.

    On resume MMEngine replays the dataloader up to the saved iteration (so
    the sampler order and per-worker augmentation streams line up), and this
    replay draws random numbers in the main process. Random states restored
    before it would be consumed by it; restored after it, the next batch and
    the next training step see exactly the streams of the uninterrupted run.
    The restoring is done by :class:`~icmsr.engine.random_state.RandomStateHook`,
    which this loop calls between the replay and the first new iteration.

    Args are those of :class:`mmengine.runner.IterBasedTrainLoop`.
    """

    #: Read by RandomStateHook: this loop restores the states itself.
    restores_random_state = True

    def _random_state_hooks(self) -> list:
        from icmsr.engine.random_state import RandomStateHook
        return [h for h in self.runner.hooks if isinstance(h, RandomStateHook)]

    def _replay_dataloader(self) -> None:
        """Advance the dataloader past the batches already trained on."""
        start = time.perf_counter()
        print_log(f'Replaying {self._iter} batches of the dataloader to continue the '
                  'data order of the interrupted run', logger='current', level=logging.INFO)
        for _ in range(self._iter):
            next(self.dataloader_iterator)
        print_log(f'Replay done in {time.perf_counter() - start:.1f} s', logger='current')

    def run(self):
        """Launch training (resume-aware).

        Returns:
            The trained model.
        """
        self.runner.call_hook('before_train')
        # The whole iteration-based run is one big epoch for the hooks.
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._replay_dataloader()
        for hook in self._random_state_hooks():
            hook.restore_pending(self.runner)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
