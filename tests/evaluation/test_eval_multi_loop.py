"""MultiTestLoop / MultiValLoop with IQAMetrics through a real MMEngine Runner."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from icmsr.structures import SRDataSample


class PairSet(Dataset):
    """Tiny paired set: GT uint8 images and a per-set noise level for the 'model'."""

    def __init__(self, name, n, noise, size=48, gt_dir=None):
        rng = np.random.default_rng(hash(name) % 1000)
        self.items = []
        for i in range(n):
            gt = torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
            gt_path = None
            if gt_dir is not None:  # FID reads GT files when the dataset has them
                from PIL import Image
                gt_path = os.path.join(gt_dir, f'{name}_{i}.png')
                Image.fromarray(gt.permute(1, 2, 0).numpy()).save(gt_path)
            self.items.append((f'{name}_{i}', gt, gt_path))
        self.noise = noise
        self.metainfo = {'name': name}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        key, gt, gt_path = self.items[i]
        return {'inputs': {'gt': gt},
                'data_samples': SRDataSample(metainfo=dict(key=key, gt_path=gt_path,
                                                           noise=self.noise))}


class NoisyModel(BaseModel):
    """'Super-resolves' by adding a deterministic, per-set amount of noise to the GT."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        outs = []
        for gt, ds in zip(inputs['gt'], data_samples):
            gt = gt.float() / 255.0
            g = torch.Generator().manual_seed(int(ds.key.split('_')[-1]))
            pred = (gt + ds.noise * torch.randn(gt.shape, generator=g)).clamp(0, 1)
            out = SRDataSample(metainfo=ds.metainfo)
            out.pred_img, out.gt_img = pred, gt
            outs.append(out)
        return outs


def _loader(ds):
    return dict(dataset=ds, batch_size=2, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=False))


def _runner(tmp_path, loaders, evaluators, mode='test'):
    cfg = dict(model=NoisyModel(), work_dir=str(tmp_path / 'work'), default_scope='icmsr',
               default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
               env_cfg=dict(dist_cfg=dict(backend='gloo')), log_level='WARNING')
    if mode == 'test':
        cfg.update(test_dataloader=loaders, test_evaluator=evaluators,
                   test_cfg=dict(type='MultiTestLoop'))
    else:
        cfg.update(val_dataloader=loaders, val_evaluator=evaluators,
                   val_cfg=dict(type='MultiValLoop'))
    return Runner(**cfg)


def _psnr_y(pred, gt):
    """Independent PSNR on Y of 8-bit images (float64)."""
    def y(img):
        arr = (img.double().clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        return 16.0 + arr @ np.array([65.481, 128.553, 24.966]) / 255.0
    return 10 * np.log10(255.0 ** 2 / np.mean((y(pred) - y(gt)) ** 2))


def test_two_sets_one_run(tmp_path):
    import icmsr.engine  # noqa: F401  registers the loops
    import icmsr.evaluation  # noqa: F401
    sets = [PairSet('SetA', 3, 0.02), PairSet('SetB', 2, 0.10)]
    evs = [dict(type='IQAMetrics', metric_names=['psnr', 'ssim'], prefix='SetA', device='cpu'),
           dict(type='IQAMetrics', metric_names=['psnr', 'ssim'], prefix='SetB', device='cpu')]
    runner = _runner(tmp_path, [_loader(s) for s in sets], evs)
    metrics = runner.test()
    assert set(metrics) == {'SetA/PSNR', 'SetA/SSIM', 'SetB/PSNR', 'SetB/SSIM'}
    assert metrics['SetA/PSNR'] > metrics['SetB/PSNR'] + 5  # less noise, higher PSNR
    # Per-image values equal an independent PSNR of the same (8-bit) images.
    model = NoisyModel()
    for s in sets:
        rows = list(csv.DictReader(open(os.path.join(runner.log_dir, 'metrics', s.metainfo['name'],
                                                     'per_image.csv'))))
        assert len(rows) == len(s)
        expected = []
        for i, row in enumerate(rows):
            item = s[i]
            out = model({'gt': [item['inputs']['gt']]}, [item['data_samples']])[0]
            assert row['key'] == item['data_samples'].key
            assert float(row['psnr']) == pytest.approx(_psnr_y(out.pred_img, out.gt_img), abs=1e-3)
            expected.append(float(row['psnr']))
        assert metrics[f'{s.metainfo["name"]}/PSNR'] == pytest.approx(np.mean(expected), abs=1e-5)
        sr_dir = os.path.join(runner.log_dir, 'metrics', s.metainfo['name'], 'sr')
        assert sorted(os.listdir(sr_dir)) == sorted(f'{k}.png' for k, _, _ in s.items)
    summary = json.load(open(os.path.join(runner.log_dir, 'metrics', 'summary.json')))
    assert set(summary['datasets']) == {'SetA', 'SetB'}
    table = open(os.path.join(runner.log_dir, 'metrics', 'table.md')).read()
    assert '| SetA | ICM-SR |' in table and '| SetB | ICM-SR |' in table


def test_single_set_and_val_loop(tmp_path):
    import icmsr.engine  # noqa: F401
    ds = PairSet('Solo', 2, 0.05)
    runner = _runner(tmp_path, _loader(ds),
                     dict(type='IQAMetrics', metric_names=['psnr'], prefix='Solo', device='cpu'),
                     mode='val')
    runner._val_loop = runner.build_val_loop(runner._val_loop)
    runner.call_hook('before_run')
    metrics = runner.val_loop.run()
    assert list(metrics) == ['Solo/PSNR'] and np.isfinite(metrics['Solo/PSNR'])


def test_mismatched_lists_and_duplicate_prefixes_fail(tmp_path):
    import icmsr.engine  # noqa: F401
    a, b = PairSet('A', 1, 0.05), PairSet('B', 1, 0.05)
    ev = dict(type='IQAMetrics', metric_names=['psnr'], prefix='Same', device='cpu')
    runner = _runner(tmp_path, [_loader(a), _loader(b)], [ev])
    with pytest.raises(ValueError, match='2 test_dataloader.*1 test_evaluator'):
        runner.test()
    runner = _runner(tmp_path, [_loader(a), _loader(b)], [ev, dict(ev)])
    with pytest.raises(ValueError, match='appear in two test sets'):
        runner.test()


def test_missing_gt_for_full_reference_metric_is_clear():
    from icmsr.evaluation import IQAMetrics
    metric = IQAMetrics(metric_names=['psnr'], prefix='X', device='cpu', out_dir='/tmp/unused')
    sample = SRDataSample(metainfo=dict(key='k'))
    sample.pred_img = torch.rand(3, 16, 16)
    with pytest.raises(KeyError, match='need `gt_img`'):
        metric.process({}, [sample])


def test_fid_uses_saved_sr_and_gt_files(tmp_path, monkeypatch):
    """FID gets the set's saved SR PNGs and its GT files (saved when no gt_path exists)."""
    import icmsr.evaluation.iqa_metric as iqa
    from icmsr.evaluation import IQAMetrics
    from icmsr.evaluation.weights import WEIGHT_FILES
    weights = tmp_path / 'w'
    for wf in WEIGHT_FILES['fid']:  # existence is all the build-time check looks at
        (weights / wf.relpath).parent.mkdir(parents=True)
        (weights / wf.relpath).write_bytes(b'')
    calls = []
    monkeypatch.setattr(iqa, 'compute_fid', lambda sr, gt, *a: calls.append((sr, gt)) or 12.5)
    metric = IQAMetrics(metric_names=['fid', 'psnr'], prefix='F', device='cpu',
                        out_dir=str(tmp_path / 'out'), weights_dir=str(weights))
    ds = PairSet('F', 3, 0.05, gt_dir=None)
    ds_files = PairSet('G', 1, 0.05, gt_dir=str(tmp_path))
    samples = NoisyModel()({'gt': [ds[i]['inputs']['gt'] for i in range(3)] +
                            [ds_files[0]['inputs']['gt']]},
                           [ds[i]['data_samples'] for i in range(3)]
                           + [ds_files[0]['data_samples']])
    metric.process({}, samples)
    result = metric.evaluate(4)
    assert result == {'F/FID': 12.5, 'F/PSNR': pytest.approx(result['F/PSNR'])}
    (sr, gt), = calls
    set_dir = tmp_path / 'out' / 'F'
    assert sr == ([str(set_dir / 'sr' / f'F_{i}.png') for i in range(3)]
                  + [str(set_dir / 'sr' / 'G_0.png')])
    assert gt[:3] == [str(set_dir / 'gt' / f'F_{i}.png') for i in range(3)]
    assert gt[3] == str(tmp_path / 'G_0.png')  # the dataset's own GT file
    assert all(os.path.isfile(p) for p in sr + gt)
    summary = json.load(open(set_dir / 'summary.json'))
    assert list(summary['datasets']['F']['metrics']) == ['fid', 'psnr']


def test_missing_weights_stop_the_test_run_before_any_inference(tmp_path, monkeypatch):
    import icmsr.engine  # noqa: F401  registers the loops
    from icmsr.evaluation import MetricWeightsError
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.delenv('ICMSR_METRIC_WEIGHTS', raising=False)
    calls = []
    monkeypatch.setattr(NoisyModel, 'test_step', lambda self, data: calls.append(1))
    evs = [dict(type='IQAMetrics', metric_names=['psnr', 'fid'], prefix='SetA', device='cpu')]
    runner = _runner(tmp_path, [_loader(PairSet('SetA', 2, 0.02))], evs)
    with pytest.raises(MetricWeightsError, match='pt_inception'):
        runner.test()
    assert not calls  # FID's weights were checked before the first batch
