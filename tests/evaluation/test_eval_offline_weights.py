"""Offline construction of every metric from a weights folder, without any network.

Stand-in files (random values, the published files' structure; see
``standin_weights.py``) fill a weights folder; every metric is built from it
while ``socket`` refuses all connections. Missing and wrong files must fail
with one clear message naming the files and where they are published.
"""
import os
import shutil
import socket
import sys

import pytest
import torch

from icmsr.evaluation import weights as W
from icmsr.evaluation.fid import compute_fid
from icmsr.evaluation.scorers import DEFAULT_METRICS, build_scorers

sys.path.insert(0, os.path.dirname(__file__))
from standin_weights import make_standin_folder  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


class _NetworkAttempt(AssertionError):
    pass


@pytest.fixture()
def no_network(monkeypatch):
    """Any connection attempt fails the test (on top of the suite's own guard)."""
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


def test_file_list_covers_every_metric_and_has_urls():
    assert set(W.WEIGHT_FILES) == set(DEFAULT_METRICS)
    files = W.required_files(DEFAULT_METRICS)
    assert len(files) == 11 and len({f.relpath for f in files}) == 11
    for f in files:
        assert f.url.startswith('https://') and f.url.endswith(f.name)
        assert f.relpath.split('/')[1] in ('pyiqa', 'checkpoints', 'clip')
    # NIQE, PSNR and SSIM work without any file.
    assert W.required_files(['psnr', 'ssim', 'niqe']) == []


def test_every_metric_builds_offline_from_standins(standin, no_network, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, standin)  # the env var alone selects the folder
    torch.set_num_threads(1)
    scorers = build_scorers(DEFAULT_METRICS, device='cpu')
    assert set(scorers) == set(DEFAULT_METRICS) - {'fid'}  # FID is built per set:
    import pyiqa
    with W.offline_pyiqa(standin):
        assert pyiqa.create_metric('fid', device='cpu') is not None
    img = torch.rand(1, 3, 64, 64)
    for name in ('lpips', 'dists', 'psnr', 'ssim'):
        assert len(scorers[name](img, img.flip(-1))) == 1
    # Nothing was fetched into the real cache; pyiqa's own cache dir is restored.
    from pyiqa.utils import download_util
    assert not download_util.DEFAULT_CACHE_DIR.startswith(standin)
    assert not torch.hub.get_dir().startswith(standin)


def test_fid_offline_scores_exactly_the_listed_files(standin, no_network, tmp_path, monkeypatch):
    """FID builds offline and sees exactly the given files, never their neighbours."""
    import numpy as np
    from PIL import Image
    import pyiqa.archs.fid_arch as fid_arch
    for sub in ('sr', 'gt'):
        (tmp_path / sub).mkdir()
        for i in range(4):
            Image.fromarray((torch.rand(8, 8, 3) * 255).byte().numpy()).save(
                tmp_path / sub / f'{i}.png')
        (tmp_path / sub / 'notes.txt').write_text('not an image')
    seen = []

    def features(fdir, *args, **kwargs):  # the 2048-d sqrtm is minutes on CPU: small stand-in
        files = sorted(os.listdir(fdir))
        seen.append([os.path.realpath(os.path.join(fdir, f)) for f in files])
        return np.stack([np.asarray(Image.open(os.path.join(fdir, f)), np.float64).ravel()[:2]
                         for f in files])

    monkeypatch.setattr(fid_arch, 'get_folder_features', features)
    sr = [str(tmp_path / 'sr' / f'{i}.png') for i in range(3)]  # 3.png is not in the set
    gt = [str(tmp_path / 'gt' / f'{i}.png') for i in range(3)]
    assert compute_fid(sr, sr, 'cpu', standin) == pytest.approx(0, abs=1e-6)
    assert seen[0] == seen[1] == [os.path.realpath(p) for p in sr]
    value = compute_fid(sr, gt, 'cpu', standin)
    assert seen[-1] == [os.path.realpath(p) for p in gt] and value > 0


def test_missing_files_one_message_naming_each_with_url(standin, tmp_path, no_network):
    root = str(tmp_path / 'w')
    shutil.copytree(standin, root)
    gone = ['hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth', 'hub/clip/RN50.pt',
            'hub/checkpoints/vgg16-397923af.pth']
    for rel in gone:
        os.remove(os.path.join(root, rel))
    with pytest.raises(W.MetricWeightsError) as info:
        build_scorers(DEFAULT_METRICS, 'cpu', root)
    msg = str(info.value)
    assert msg.startswith('3 metric weight file(s) missing')
    for rel in gone:
        wf = next(f for f in W.required_files(DEFAULT_METRICS) if f.relpath == rel)
        assert os.path.join(root, rel) in msg and wf.url in msg
    assert 'download_metric_weights.py' in msg


def test_empty_folder_lists_all_eleven(tmp_path):
    with pytest.raises(W.MetricWeightsError, match='^11 metric weight file'):
        W.check_weights(DEFAULT_METRICS, str(tmp_path))


@pytest.mark.parametrize('victim,metric,swap_in', [
    # a MUSIQ checkpoint holding TOPIQ's weights (strict load)
    ('hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth', 'musiq',
     'hub/pyiqa/cfanet_nr_koniq_res50-9a73138b.pth'),
    # LPIPS loads non-strictly: a file matching none of its keys must still fail
    ('hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth', 'lpips', 'hub/pyiqa/DISTS_weights-f5e65c96.pth'),
    # a CLIP file that is not CLIP
    ('hub/clip/RN50.pt', 'clipiqa', 'hub/pyiqa/DISTS_weights-f5e65c96.pth'),
])
def test_wrong_file_clear_error(standin, tmp_path, no_network, victim, metric, swap_in):
    root = str(tmp_path / 'w')
    shutil.copytree(standin, root)
    shutil.copyfile(os.path.join(root, swap_in), os.path.join(root, victim))
    with pytest.raises(W.MetricWeightsError) as info:
        build_scorers([metric], 'cpu', root)
    assert os.path.join(root, victim) in str(info.value)
    assert 're-download' in str(info.value).lower()


def test_corrupt_file_clear_error(standin, tmp_path, no_network):
    root = str(tmp_path / 'w')
    shutil.copytree(standin, root)
    path = os.path.join(root, 'hub/pyiqa/DISTS_weights-f5e65c96.pth')
    with open(path, 'wb') as f:
        f.write(b'<html>rate limited</html>')
    with pytest.raises(W.MetricWeightsError, match='DISTS_weights'):
        build_scorers(['dists'], 'cpu', root)


def test_guard_refuses_sockets_and_restores_them(tmp_path):
    original = socket.socket.connect
    with W.offline_pyiqa(str(tmp_path)):
        with pytest.raises(W.NetworkAccessError, match='ICMSR_METRIC_WEIGHTS'):
            socket.create_connection(('example.com', 443), timeout=1)
        s = socket.socket()
        try:
            with pytest.raises(W.NetworkAccessError):
                s.connect(('127.0.0.1', 9))
        finally:
            s.close()
        import pyiqa.utils.download_util as du
        with pytest.raises(W.MetricWeightsError, match='from https://'):
            du.load_file_from_url('https://huggingface.co/x/resolve/main/missing.pth')
    assert socket.socket.connect is original
    assert 'connect' not in vars(socket.socket)


def test_no_weights_dir_means_no_patching(monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    assert W.resolve_weights_dir(None) is None
    before = socket.create_connection
    with W.offline_pyiqa(None):
        assert socket.create_connection is before


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
    assert out.count('[would fetch]') == 11
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    # Present files are reported as such and nothing is fetched.
    assert main(['--out', standin, '--metrics', 'lpips', 'niqe']) == 0
    out = capsys.readouterr().out
    assert out.count('[present]') == 2 and 'fetching' not in out


def test_modules_imported_inside_the_guard_keep_no_wrappers(standin):
    """pyiqa imports arch modules lazily; none may keep our wrappers after the block."""
    import importlib
    import sys as _sys
    from pyiqa.archs import arch_util
    from pyiqa.utils import download_util
    original = arch_util.load_pretrained_network
    _sys.modules.pop('pyiqa.archs.nima_arch', None)
    with W.offline_pyiqa(standin):
        nima = importlib.import_module('pyiqa.archs.nima_arch')
        assert nima.load_pretrained_network is not original  # bound to the wrapper
    assert nima.load_pretrained_network is original is arch_util.load_pretrained_network
    for name, mod in list(_sys.modules.items()):
        if name.startswith('pyiqa.') and hasattr(mod, 'load_file_from_url'):
            assert mod.load_file_from_url is download_util.load_file_from_url, name


def test_offline_block_leaves_torch_hub_following_torch_home(tmp_path, monkeypatch):
    """After the block, torch's hub folder follows $TORCH_HOME again (nothing pinned)."""
    import torch.hub

    from icmsr.evaluation.weights import offline_pyiqa
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    with offline_pyiqa(str(tmp_path / 'weights')):
        assert torch.hub.get_dir() == str(tmp_path / 'weights' / 'hub')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'elsewhere'))
    assert torch.hub.get_dir() == str(tmp_path / 'elsewhere' / 'hub')
