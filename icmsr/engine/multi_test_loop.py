"""Validation and test loops over several test sets, each with its own evaluator.

MMEngine's ``ValLoop``/``TestLoop`` take one dataloader and one evaluator. The
paper reports three test sets (DIV2K-Val, RealSR, DRealSR) from one checkpoint,
so these loops take lists, in the MMagic multi-loop style::

    test_dataloader = [dict(dataset=div2k, ...), dict(dataset=realsr, ...)]
    test_evaluator = [dict(type='IQAMetrics', prefix='DIV2K-Val'),
                      dict(type='IQAMetrics', prefix='RealSR')]
    test_cfg = dict(type='MultiTestLoop')

A single dataloader (dict) with a single evaluator works as well. Each element
of the evaluator list is anything ``Runner.build_evaluator`` accepts (one metric
dict, a list of metric dicts, or an ``Evaluator`` config). Hooks see one epoch:
``before_*_epoch`` once, ``*_iter`` hooks for every batch of every set (with
``runner.test_loop.dataloader`` pointing at the current set), ``after_*_epoch``
once with the metrics of all sets merged. Metric keys must differ between sets,
which the per-set ``prefix`` ensures. The model's ``val_step``/``test_step``
outputs go to the evaluator as they are (icmsr models return data samples, no
losses, so there are no validation losses to average).

After the last set the loop merges the per-set summaries of ``IQAMetrics`` into
``{log_dir}/metrics/summary.json`` and ``table.md`` (the paper's table layout).
"""
import os
from typing import Dict, List, Sequence, Union

import torch
from mmengine.evaluator import Evaluator
from mmengine.runner.amp import autocast
from mmengine.runner.base_loop import BaseLoop
from torch.utils.data import DataLoader

from icmsr.registry import LOOPS


def _as_list(obj) -> list:
    return list(obj) if isinstance(obj, (list, tuple)) else [obj]


class _MultiSetLoop(BaseLoop):
    """Shared machinery of :class:`MultiValLoop` and :class:`MultiTestLoop`.

    Args:
        runner: The runner.
        dataloader: One dataloader (or config) or a list of them.
        evaluator: One evaluator config/instance or a list, one per dataloader.
            With one dataloader, a list of metric dicts is one evaluator.
        fp16: Run the model under autocast.
        write_reports: Merge IQAMetrics summaries into ``{log_dir}/metrics``.
    """

    mode = 'test'

    def __init__(self, runner, dataloader: Union[DataLoader, Dict, Sequence],
                 evaluator: Union[Evaluator, Dict, Sequence], fp16: bool = False,
                 write_reports: bool = True) -> None:
        self._runner = runner
        many = isinstance(dataloader, (list, tuple))
        loaders = _as_list(dataloader)
        evaluators = _as_list(evaluator) if many else [evaluator]
        if len(evaluators) != len(loaders):
            raise ValueError(
                f'{type(self).__name__}: {len(loaders)} {self.mode}_dataloader(s) but '
                f'{len(evaluators)} {self.mode}_evaluator(s); give one evaluator per dataloader')
        # As MMEngine's own loops: per-rank dataloader seeds follow `randomness`.
        diff_rank_seed = (runner.cfg.get('randomness') or {}).get('diff_rank_seed', False)
        self.dataloaders: List[DataLoader] = [
            runner.build_dataloader(dl, seed=runner.seed, diff_rank_seed=diff_rank_seed)
            if isinstance(dl, dict) else dl for dl in loaders]
        self.evaluators: List[Evaluator] = [
            ev if isinstance(ev, Evaluator) else runner.build_evaluator(ev) for ev in evaluators]
        for dl, ev in zip(self.dataloaders, self.evaluators):
            meta = getattr(dl.dataset, 'metainfo', None)
            if meta is not None:
                ev.dataset_meta = meta
        # Hooks and the log processor read ``loop.dataloader``: the current set.
        self.dataloader = self.dataloaders[0]
        self.fp16 = fp16
        self.write_reports = write_reports

    @property
    def report_dir(self) -> str:
        """Folder of the per-set images and reports (``{log_dir}/metrics``)."""
        return os.path.join(self.runner.log_dir, 'metrics')

    def run(self) -> dict:
        """Run every set, evaluate each, and return all metrics merged.

        Returns:
            ``{'{prefix}/{metric}': value}`` over all sets.
        """
        self.runner.call_hook(f'before_{self.mode}')
        self.runner.call_hook(f'before_{self.mode}_epoch')
        self.runner.model.eval()
        for ev in self.evaluators:
            for metric in ev.metrics:
                if hasattr(metric, 'set_default_out_dir'):
                    metric.set_default_out_dir(self.report_dir)
                if hasattr(metric, 'check_weights'):  # before any image is inferred
                    metric.check_weights()
        metrics: Dict = {}
        for dl, ev in zip(self.dataloaders, self.evaluators):
            self.dataloader = dl
            for idx, data_batch in enumerate(dl):
                self.run_iter(idx, data_batch, ev)
            set_metrics = ev.evaluate(len(dl.dataset))
            clash = set(set_metrics) & set(metrics)
            if clash:
                raise ValueError(f'Metric keys {sorted(clash)} appear in two test sets; '
                                 'give each evaluator its own prefix')
            metrics.update(set_metrics)
        if self.write_reports:
            self._merge_reports()
        self.runner.call_hook(f'after_{self.mode}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{self.mode}')
        return metrics

    @torch.no_grad()
    def run_iter(self, idx: int, data_batch: dict, evaluator: Evaluator) -> None:
        """Run the model on one batch and feed its outputs to the set's evaluator.

        Args:
            idx: Batch index within the current set.
            data_batch: The batch from the dataloader.
            evaluator: The current set's evaluator.
        """
        self.runner.call_hook(f'before_{self.mode}_iter', batch_idx=idx, data_batch=data_batch)
        with autocast(enabled=self.fp16):
            step = getattr(self.runner.model, f'{self.mode}_step')
            outputs = step(data_batch)
        evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(f'after_{self.mode}_iter', batch_idx=idx,
                              data_batch=data_batch, outputs=outputs)

    def _merge_reports(self) -> None:
        """Write all sets' IQAMetrics summaries as one JSON and one Markdown table."""
        from mmengine.dist import is_main_process
        from icmsr.evaluation.reports import make_summary, markdown_table, write_json, write_table
        summaries = [m.last_summary for ev in self.evaluators for m in ev.metrics
                     if getattr(m, 'last_summary', None)]
        if not summaries or not is_main_process():
            return
        methods = {s['method'] for s in summaries}
        if len(methods) == 1:  # one method on several sets: one summary file
            datasets = {k: v for s in summaries for k, v in s['datasets'].items()}
            summaries = [make_summary(methods.pop(), datasets, summaries[0]['settings'])]
            write_json(os.path.join(self.report_dir, 'summary.json'), summaries[0])
        write_table(os.path.join(self.report_dir, 'table.md'), markdown_table(summaries))


@LOOPS.register_module()
class MultiValLoop(_MultiSetLoop):
    """Validation on one or several sets (``val_cfg=dict(type='MultiValLoop')``)."""

    mode = 'val'


@LOOPS.register_module()
class MultiTestLoop(_MultiSetLoop):
    """Testing on one or several sets (``test_cfg=dict(type='MultiTestLoop')``)."""

    mode = 'test'
