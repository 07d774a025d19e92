"""A user's mistake gets one ``error:`` line and exit status 2 from every tool, before any build.

Each case is a command line a user ran that ended in a traceback before; the
tools run in-process (their ``main`` under ``run_tool``, as ``__main__`` calls
it) with the expensive part replaced by a guard that fails the test if reached,
so every check is shown to fire before anything is built. Two subprocess runs
check the real entry point and ``--debug``.
"""
import functools
import os
import os.path as osp
import subprocess
import sys

import pytest

from icmsr.user_errors import ConfigError, MissingInputError, OutputNotWritableError, UserError
from tool_loading import ROOT, load_tool

TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')


@functools.lru_cache(maxsize=None)
def _tool(name):
    return load_tool(f'tools/{name}.py')


class _NotToBeBuilt:
    """Stands in for what a tool builds; reaching it means a check came too late."""

    def __init__(self, *args, **kwargs):
        raise AssertionError('built before the user error was reported')

    from_cfg = classmethod(lambda cls, *a, **k: cls())


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv('ICMSR_DEBUG', raising=False)


@pytest.fixture
def guarded(monkeypatch):
    """The tools, with their Runner/model construction replaced by :class:`_NotToBeBuilt`."""
    for name, attr in (('train', 'Runner'), ('test', 'Runner'), ('infer', 'SRInferencer'),
                       ('export_lora', 'init_model')):
        monkeypatch.setattr(_tool(name), attr, _NotToBeBuilt)
    return _tool


def _error_line(capsys, tool, argv):
    """Run ``tool`` as its ``__main__`` does; return its one ``error:`` line (status 2)."""
    status = tool.run_tool(tool.main, argv)
    out, err = capsys.readouterr()
    text = out + err
    lines = [line for line in text.splitlines() if line.startswith('error:')]
    assert status == 2, text[-3000:]
    assert len(lines) == 1, text[-3000:]
    assert 'Traceback' not in text
    return lines[0]


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    """The tiny config's data root with its training folder but no test pairs."""
    root = tmp_path / 'data'
    (root / 'train').mkdir(parents=True)
    monkeypatch.setenv('ICMSR_TINY_DATA', str(root))
    return root


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / 'a_file.txt'
    path.write_text('not a folder')
    return path


def _train(*extra, work_dir):
    return [TINY, '--work-dir', str(work_dir), *extra]


def test_train_bad_max_iters_names_the_key(guarded, capsys, tiny_root, tmp_path):
    line = _error_line(capsys, guarded('train'), _train(
        '--cfg-options', 'train_cfg.max_iters=abc', work_dir=tmp_path / 'w'))
    assert "train_cfg.max_iters='abc' must be an integer" in line


@pytest.mark.parametrize('option, expected', [
    ('train_dataloader.batch_size=0', 'train_dataloader.batch_size=0 must be at least 1'),
    ('optim_wrapper.generator.optimizer.lr=fast',
     "optim_wrapper.generator.optimizer.lr='fast' must be a number"),
    ('model.loss_weights.lpips=two', "model.loss_weights.lpips='two' must be a number"),
    ('model.test_cfg.tile_size=big', "model.test_cfg.tile_size='big' must be an integer"),
    ('default_hooks.checkpoint.interval=1.5',
     'default_hooks.checkpoint.interval=1.5 must be an integer'),
])
def test_train_bad_numbers_name_the_key(guarded, capsys, tiny_root, tmp_path, option, expected):
    line = _error_line(capsys, guarded('train'), _train('--cfg-options', option,
                                                         work_dir=tmp_path / 'w'))
    assert expected in line


def test_train_misspelled_component_argument(guarded, capsys, tiny_root, tmp_path):
    # Was: the did-you-mean warning, then a TypeError traceback from VSDRegularizer.__init__.
    line = _error_line(capsys, guarded('train'), _train(
        '--cfg-options', 'model.regularizer.cfg_scael=2', work_dir=tmp_path / 'w'))
    assert 'model.regularizer.cfg_scael=2' in line and "did you mean 'cfg_scale'" in line


def test_train_missing_data_folders_name_key_and_path(guarded, capsys, tiny_root, tmp_path):
    missing = tmp_path / 'nowhere'
    line = _error_line(capsys, guarded('train'), _train(
        '--cfg-options', f'train_dataloader.dataset.dataset.data_root={missing}',
        work_dir=tmp_path / 'w'))
    assert f"train_dataloader.dataset.dataset.data_root: folder '{missing}' does not exist" in line
    # The validation set is built by training too: its missing test pairs are named.
    line = _error_line(capsys, guarded('train'), _train(work_dir=tmp_path / 'w'))
    assert f"val_dataloader.0.dataset.data_root: folder '{tiny_root / 'test'}'" in line


def test_train_work_dir_on_a_file(guarded, capsys, tiny_root, a_file):
    line = _error_line(capsys, guarded('train'), _train(work_dir=a_file))
    assert f"--work-dir '{a_file}'" in line and 'existing file' in line


def test_train_missing_config_and_resume_checkpoint(guarded, capsys, tiny_root, tmp_path):
    line = _error_line(capsys, guarded('train'), [str(tmp_path / 'nope.py')])
    assert f"config file '{tmp_path / 'nope.py'}' does not exist" in line
    line = _error_line(capsys, guarded('train'), _train(
        '--resume', str(tmp_path / 'iter_4.pth'), work_dir=tmp_path / 'w'))
    assert f"--resume: checkpoint '{tmp_path / 'iter_4.pth'}' does not exist" in line


def test_test_missing_data_folder(guarded, capsys, tmp_path, monkeypatch, a_file):
    # Was: ~630 lines of log, then a FileNotFoundError traceback from the dataset.
    monkeypatch.setenv('ICMSR_TINY_DATA', str(tmp_path / 'nodata'))
    line = _error_line(capsys, guarded('test'), [TINY, str(a_file), '--work-dir',
                                                 str(tmp_path / 'w')])
    assert (f"test_dataloader.0.dataset.data_root: folder '{tmp_path / 'nodata' / 'test'}' "
            'does not exist') in line


def test_test_missing_checkpoint_and_unwritable_out(guarded, capsys, tiny_root, tmp_path, a_file):
    (tiny_root / 'test' / 'test_LR').mkdir(parents=True)
    (tiny_root / 'test' / 'test_HR').mkdir()
    work = ['--work-dir', str(tmp_path / 'w')]
    line = _error_line(capsys, guarded('test'), [TINY, str(tmp_path / 'x.pth')] + work)
    assert f"checkpoint '{tmp_path / 'x.pth'}' does not exist" in line
    out = a_file / 'metrics.json'  # its folder is a file: no one, root included, can write it
    line = _error_line(capsys, guarded('test'), [TINY, str(a_file), '--out', str(out)] + work)
    assert f"--out '{out}' is not writable" in line and 'existing file' in line


@pytest.fixture
def photo(tmp_path):
    import cv2
    import numpy as np
    path = tmp_path / 'photo.png'
    cv2.imwrite(str(path), np.full((16, 16, 3), 128, np.uint8))
    return path


def _infer(photo, output, *extra):
    return ['--config', TINY, '--allow-untrained', '--input', str(photo), '--output', str(output),
            *extra]


def test_infer_missing_input(guarded, capsys, tmp_path):
    line = _error_line(capsys, guarded('infer'), _infer(tmp_path / 'nope.png', tmp_path / 'out'))
    assert f"'{tmp_path / 'nope.png'}'" in line


@pytest.mark.parametrize('where', ['existing_file', 'under_a_file'])
def test_infer_unwritable_output(guarded, capsys, photo, a_file, where):
    output = a_file if where == 'existing_file' else a_file / 'sub'
    line = _error_line(capsys, guarded('infer'), _infer(photo, output))
    assert f"--output '{output}' is not writable" in line
    assert f"'{a_file}' is an existing file" in line


def test_infer_missing_weights_and_bad_option(guarded, capsys, photo, tmp_path):
    args = ['--config', TINY, '--input', str(photo), '--output', str(tmp_path / 'o')]
    line = _error_line(capsys, guarded('infer'), args + ['--weights', str(tmp_path / 'w.pth')])
    assert f"--weights '{tmp_path / 'w.pth'}' does not exist" in line
    line = _error_line(capsys, guarded('infer'), _infer(
        photo, tmp_path / 'o', '--cfg-options', 'model.test_cfg.tile_size=abc'))
    assert "model.test_cfg.tile_size='abc' must be an integer" in line


def test_missing_pretrained_folder_is_named_before_the_build(guarded, capsys, photo, tmp_path,
                                                            monkeypatch):
    # The paper's config with ICMSR_SD14 pointing at a folder that is not there: was a
    # one-liner only after the Runner's config dump (~390 lines); now before anything.
    monkeypatch.setenv('ICMSR_SD14', str(tmp_path / 'sd14'))
    args = ['--config', osp.join(ROOT, 'configs', 'icmsr_multi.py'), '--allow-untrained',
            '--input', str(photo), '--output', str(tmp_path / 'o')]
    line = _error_line(capsys, guarded('infer'), args)
    assert (f"model.unet.from_pretrained: local folder '{tmp_path / 'sd14'}' (subfolder 'unet') "
            'does not exist') in line
    assert 'ICMSR_SD14=' in line  # and how to point the config at the weights
    (tmp_path / 'sd14').mkdir()
    line = _error_line(capsys, guarded('infer'), args)
    assert f"'{tmp_path / 'sd14'}' (subfolder 'unet') has no subfolder 'unet'" in line


def test_export_missing_checkpoint_and_out_on_a_file(guarded, capsys, tmp_path, a_file):
    line = _error_line(capsys, guarded('export_lora'), [
        str(tmp_path / 'iter_6.pth'), '--config', TINY, '--out', str(tmp_path / 'exp')])
    assert f"checkpoint '{tmp_path / 'iter_6.pth'}' does not exist" in line
    line = _error_line(capsys, guarded('export_lora'), [
        str(a_file), '--config', TINY, '--out', str(a_file)])
    assert f"--out '{a_file}' is not writable" in line


def test_eval_folder_missing_pred_and_out_on_a_file(capsys, photo, tmp_path, a_file):
    tool = _tool('eval_folder')
    folder = str(photo.parent)
    line = _error_line(capsys, tool, ['--pred', str(tmp_path / 'sr'), '--gt', folder,
                                      '--metrics', 'psnr', '--no-progress'])
    assert f"--pred '{tmp_path / 'sr'}' does not exist" in line
    line = _error_line(capsys, tool, ['--pred', folder, '--gt', folder, '--metrics', 'psnr',
                                      '--out', str(a_file), '--no-progress'])
    assert f"--out '{a_file}' is not writable" in line


def test_debug_flag_and_variable_give_the_traceback(guarded, tmp_path, tiny_root, monkeypatch):
    tool = guarded('train')
    argv = _train('--cfg-options', 'train_cfg.max_iters=abc', work_dir=tmp_path / 'w')
    with pytest.raises(ConfigError, match='train_cfg.max_iters'):
        tool.run_tool(tool.main, argv + ['--debug'])
    monkeypatch.setenv('ICMSR_DEBUG', '1')
    with pytest.raises(ConfigError, match='train_cfg.max_iters'):
        tool.run_tool(tool.main, argv)
    monkeypatch.setenv('ICMSR_DEBUG', '0')
    assert tool.run_tool(tool.main, argv) == 2


def test_other_exceptions_are_bugs_and_keep_their_traceback():
    tool = _tool('eval_folder')

    def buggy(argv):
        raise KeyError('a real bug')

    with pytest.raises(KeyError):
        tool.run_tool(buggy, [])
    with pytest.raises(FileNotFoundError):  # a plain one is not the user's mistake
        tool.run_tool(lambda argv: open(osp.join(ROOT, 'no-such-file')), [])


def test_user_error_types_keep_their_builtin_bases():
    # Callers that caught the built-in types before still catch them.
    assert issubclass(ConfigError, ValueError) and issubclass(MissingInputError, FileNotFoundError)
    assert issubclass(OutputNotWritableError, OSError)
    from icmsr.evaluation.weights import MetricWeightsError
    from icmsr.models.backbones import PretrainedWeightsError
    assert issubclass(MetricWeightsError, UserError) and issubclass(MetricWeightsError,
                                                                    RuntimeError)
    assert issubclass(PretrainedWeightsError, UserError)


def _script(args, **env):
    return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1', **env))


def test_entry_point_exits_2_with_one_line_and_debug_shows_traceback(tmp_path, tiny_root):
    args = ['tools/train.py', TINY, '--work-dir', str(tmp_path / 'w'),
            '--cfg-options', 'train_cfg.max_iters=abc']
    env = dict(ICMSR_TINY_DATA=str(tiny_root), ICMSR_DEBUG='', PYTHONPATH=ROOT)
    proc = _script(args, **env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('error:')]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines == ["error: train_cfg.max_iters='abc' must be an integer "
                     '(fix the config file or the --cfg-options value)']
    assert 'Traceback' not in proc.stdout + proc.stderr
    # Nothing was built: the Runner's first log line never came.
    assert 'System environment' not in proc.stdout + proc.stderr
    proc = _script(args + ['--debug'], **env)
    assert proc.returncode == 1
    assert 'Traceback' in proc.stderr and 'ConfigError: train_cfg.max_iters' in proc.stderr


def test_output_checks_probe_without_leaving_anything(tmp_path, a_file):
    from icmsr.user_errors import check_output_file, check_output_folder
    check_output_folder(str(tmp_path / 'new' / 'deeper'), '--output')
    check_output_file(str(tmp_path / 'new' / 'metrics.json'), '--out')
    assert sorted(os.listdir(tmp_path)) == ['a_file.txt']  # no folder, no probe file
    check_output_folder(str(tmp_path / 'made'), '--output', create=True)
    assert os.listdir(tmp_path / 'made') == []
    with pytest.raises(OutputNotWritableError, match=f"'{a_file}' is an existing file"):
        check_output_folder(str(a_file / 'x' / 'y'), '--output')
    with pytest.raises(OutputNotWritableError, match='is a folder; give a file name'):
        check_output_file(str(tmp_path), '--out')


@pytest.mark.skipif(not osp.isdir('/proc/self/fd'), reason='needs Linux procfs')
def test_output_check_refuses_a_place_not_even_root_can_write():
    # procfs takes no new files whatever the permission bits say, for root too (a write
    # probe, not os.access, which answers True for root everywhere).
    from icmsr.user_errors import check_output_folder
    with pytest.raises(OutputNotWritableError, match="--output '/proc/self/fd' is not writable"):
        check_output_folder('/proc/self/fd', '--output')
