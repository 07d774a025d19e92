"""Offline construction of every metric from a weights folder, without any network.

Stand-in files (random values, the published files' structure; see
``standin_weights.py``) fill a weights folder; metrics are built from it in a
fresh process started with ``ICMSR_METRIC_WEIGHTS`` set (pyiqa fixes its weight
folder at its first import, as in a user's run) while that process's sockets
refuse every connection. Missing and wrong files must fail with one clear
message naming the files and where they are published. The CLIP metrics
(CLIPIQA, LIQE) are built only by their pre-flight here: CLIP's loader checks
the published SHA-256, which no stand-in can carry.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from icmsr.evaluation import weights as W
from icmsr.evaluation.scorers import DEFAULT_METRICS, build_scorers

sys.path.insert(0, os.path.dirname(__file__))
from network_refusal import REFUSE_NETWORK  # noqa: E402
from standin_weights import make_standin_folder, make_standin_hf_cache  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
# Metrics whose stand-ins can be built (see the module docstring).
BUILDABLE = [m for m in DEFAULT_METRICS if m not in ('clipiqa', 'liqe')]
# Test scaffolding of the child process: every connection attempt is recorded and refused.
_NO_NETWORK = REFUSE_NETWORK + textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from icmsr.evaluation import MetricWeightsError
    from icmsr.evaluation.scorers import build_scorers
''')


class _NetworkAttempt(AssertionError):
    pass


@pytest.fixture()
def no_network(monkeypatch):
    """Any connection attempt in this process fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise _NetworkAttempt(f'network access attempted: {args[1:2] or args[:1]}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    yield attempts
    assert not attempts, f'network was attempted: {attempts}'


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('metric_weights'))
    make_standin_folder(root)
    return root


@pytest.fixture(scope='module')
def hf_cache(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp('hf_cache'))
    make_standin_hf_cache(cache)
    return cache


def _child(script, weights, hf_cache, tmp_path, *args):
    """Run ``script`` in a fresh process that uses the weights folder from its start."""
    env = dict(os.environ, PYTHONPATH=REPO, ICMSR_METRIC_WEIGHTS=weights, HF_HUB_CACHE=hf_cache,
               HF_HUB_OFFLINE='1', TORCH_HOME=str(tmp_path / 'torch_home_unused'),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', _NO_NETWORK + textwrap.dedent(script), *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_file_list_covers_every_metric_and_has_urls():
    assert set(W.WEIGHT_FILES) == set(DEFAULT_METRICS)
    files = W.required_files(DEFAULT_METRICS)
    assert len(files) == 11 and len({f.relpath for f in files}) == 11
    for f in files:
        assert f.url.startswith('https://') and f.url.endswith(f.name)
        assert f.relpath.split('/')[1] in ('pyiqa', 'checkpoints', 'clip')
        assert bool(f.sha256) == (f.relpath.split('/')[1] == 'clip')  # CLIP URLs carry it
        assert not f.sha256 or f'/{f.sha256}/' in f.url
    assert set(W.HF_FILES) == {'maniqa'}
    # NIQE, PSNR and SSIM work without any file.
    assert W.required_files(['psnr', 'ssim', 'niqe']) == []


def test_buildable_metrics_build_offline_from_standins(standin, hf_cache, tmp_path):
    """Every stand-in metric builds and scores, FID sees exactly the listed files, no socket."""
    from PIL import Image
    for sub in ('sr', 'gt'):
        (tmp_path / sub).mkdir()
        for i in range(4):
            Image.fromarray((torch.rand(8, 8, 3) * 255).byte().numpy()).save(
                tmp_path / sub / f'{i}.png')
        (tmp_path / sub / 'notes.txt').write_text('not an image')
    sr = [str(tmp_path / 'sr' / f'{i}.png') for i in range(3)]  # 3.png is not in the set
    gt = [str(tmp_path / 'gt' / f'{i}.png') for i in range(3)]
    out = _child('''
        import numpy as np
        from PIL import Image
        from icmsr.evaluation.fid import compute_fid
        metrics, (sr, gt) = sys.argv[1].split(','), json.loads(sys.argv[2])
        scorers = build_scorers(metrics, device='cpu')  # imports pyiqa: first, as in a run
        import pyiqa.archs.fid_arch as fid_arch
        img = torch.rand(1, 3, 64, 64)
        values = {m: scorers[m](img, img.flip(-1)) for m in ('lpips', 'dists', 'psnr', 'ssim')}
        seen = []
        def features(fdir, *args, **kwargs):  # the 2048-d sqrtm is minutes on CPU
            files = sorted(os.listdir(fdir))
            seen.append([os.path.realpath(os.path.join(fdir, f)) for f in files])
            return np.stack([np.asarray(Image.open(os.path.join(fdir, f)), np.float64).ravel()[:2]
                             for f in files])
        fid_arch.get_folder_features = features
        fid = [compute_fid(sr, sr, 'cpu'), compute_fid(sr, gt, 'cpu')]
        from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
        print('RESULT', json.dumps(dict(built=sorted(scorers), values=values, fid=fid, seen=seen,
                                        attempts=attempts, pyiqa_dir=DEFAULT_CACHE_DIR,
                                        torch_home=os.environ.get('TORCH_HOME'))))
    ''', standin, hf_cache, tmp_path, ','.join(BUILDABLE), json.dumps([sr, gt]))
    result = json.loads(out.split('RESULT', 1)[1])
    assert result['attempts'] == []
    assert result['built'] == sorted(set(BUILDABLE) - {'fid'})  # FID is built per set
    assert all(len(v) == 1 for v in result['values'].values())
    assert result['pyiqa_dir'] == os.path.join(standin, 'hub', 'pyiqa')
    assert result['torch_home'] == str(tmp_path / 'torch_home_unused')  # restored after
    assert result['fid'][0] == pytest.approx(0, abs=1e-6) and result['fid'][1] > 0
    seen = result['seen']
    assert seen[0] == seen[1] == [os.path.realpath(p) for p in sr]
    assert seen[-1] == [os.path.realpath(p) for p in gt]


def test_missing_files_one_message_naming_each_with_url(standin, tmp_path, no_network):
    root = str(tmp_path / 'w')
    shutil.copytree(standin, root)
    gone = ['hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth', 'hub/clip/RN50.pt',
            'hub/checkpoints/vgg16-397923af.pth']
    for rel in gone:
        os.remove(os.path.join(root, rel))
    with pytest.raises(W.MetricWeightsError) as info:
        build_scorers(['musiq', 'clipiqa', 'dists'], 'cpu', root)
    msg = str(info.value)
    assert msg.startswith('3 metric weight file(s) missing')
    for rel in gone:
        wf = next(f for f in W.required_files(DEFAULT_METRICS) if f.relpath == rel)
        assert os.path.join(root, rel) in msg and wf.url in msg
    assert 'download_metric_weights.py' in msg


def test_empty_folder_lists_all_files(tmp_path):
    expected = 11 + len(W.missing_hf_files(DEFAULT_METRICS))  # + MANIQA's ViT unless cached
    with pytest.raises(W.MetricWeightsError, match=f'^{expected} metric weight file'):
        W.check_weights(DEFAULT_METRICS, str(tmp_path))


def test_wrong_and_corrupt_files_clear_errors(standin, hf_cache, tmp_path):
    root = str(tmp_path / 'w')
    shutil.copytree(standin, root)
    swaps = {  # victim <- the file put in its place
        # a MUSIQ checkpoint holding TOPIQ's weights (strict load)
        'hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth': 'hub/pyiqa/cfanet_nr_koniq_res50-9a73138b.pth',
        # LPIPS loads non-strictly: a file matching none of its keys must still fail
        'hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth': 'hub/pyiqa/DISTS_weights-f5e65c96.pth',
        # a CLIP file that is not CLIP (caught by its SHA-256, before any download)
        'hub/clip/RN50.pt': 'hub/pyiqa/DISTS_weights-f5e65c96.pth',
    }
    for victim, swap_in in swaps.items():
        shutil.copyfile(os.path.join(root, swap_in), os.path.join(root, victim))
    with open(os.path.join(root, 'hub/pyiqa/DISTS_weights-f5e65c96.pth'), 'wb') as f:
        f.write(b'<html>rate limited</html>')
    victims = dict(zip(['musiq', 'lpips', 'clipiqa'], swaps), dists='hub/pyiqa/DISTS_weights')
    out = _child('''
        for metric in sys.argv[1].split(','):
            try:
                build_scorers([metric], 'cpu')
                print('BUILT', metric)
            except MetricWeightsError as err:
                print('ERROR', json.dumps([metric, str(err)]))
        print('ATTEMPTS', json.dumps(attempts))
    ''', root, hf_cache, tmp_path, ','.join(victims))
    errors = dict(json.loads(line[6:]) for line in out.splitlines() if line.startswith('ERROR '))
    assert json.loads(out.split('ATTEMPTS', 1)[1]) == []
    assert set(errors) == set(victims), out
    for metric, rel in victims.items():
        assert os.path.join(root, rel) in errors[metric]
        assert 're-download' in errors[metric].lower()


def test_process_bound_elsewhere_is_told_to_set_the_variable(standin, no_network):
    """pyiqa, imported with another folder, would read its checkpoints there: say so."""
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
    assert not DEFAULT_CACHE_DIR.startswith(standin)
    with pytest.raises(W.MetricWeightsError, match=f'Set {W.ENV_VAR}={standin}'):
        with W.offline_pyiqa(standin, ['lpips']):
            pass


def test_offline_block_sets_only_the_environment(tmp_path, monkeypatch):
    """TORCH_HOME and HF_HUB_OFFLINE hold in the block and are restored; sockets untouched."""
    import torch.hub
    monkeypatch.setattr(torch.hub, '_hub_dir', None)  # follow $TORCH_HOME, as unset
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'elsewhere'))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    connect = socket.socket.connect
    with W.offline_pyiqa(str(tmp_path / 'weights')):
        assert torch.hub.get_dir() == str(tmp_path / 'weights' / 'hub')
        assert os.environ['HF_HUB_OFFLINE'] == '1' and socket.socket.connect is connect
    assert torch.hub.get_dir() == str(tmp_path / 'elsewhere' / 'hub')
    assert 'HF_HUB_OFFLINE' not in os.environ


def test_no_weights_dir_changes_nothing(monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    assert W.resolve_weights_dir(None) is None
    before = dict(os.environ)
    with W.offline_pyiqa(None, DEFAULT_METRICS):
        assert dict(os.environ) == before


def test_evaluation_patches_no_other_library():
    """No socket, torch.hub private attribute or other module's global is replaced."""
    folder = os.path.join(REPO, 'icmsr', 'evaluation')
    for name in os.listdir(folder):
        if name.endswith('.py'):
            text = open(os.path.join(folder, name)).read()
            for needle in ('import socket', '_hub_dir', 'setattr(', '_MODELS', 'create_model ='):
                assert needle not in text, (name, needle)


def _download_main():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'download_metric_weights', os.path.join(REPO, 'tools', 'download_metric_weights.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_download_script_dry_run(tmp_path, standin, capsys, no_network):
    main = _download_main()
    assert main(['--out', str(tmp_path), '--dry-run']) == 0
    out = capsys.readouterr().out
    for wf in W.required_files(DEFAULT_METRICS):
        assert wf.url in out and os.path.join(str(tmp_path), wf.relpath) in out
    assert out.count('[would fetch]') == 11 + len(W.missing_hf_files(DEFAULT_METRICS))
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    # Present files are reported as such and nothing is fetched.
    assert main(['--out', standin, '--metrics', 'lpips', 'niqe']) == 0
    out = capsys.readouterr().out
    assert out.count('[present]') == 2 and 'fetching' not in out
