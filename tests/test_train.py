"""gptcourse.train beyond its lesson: checkpoints whose header was changed are refused, weights that hold NaN are
never written, and run folders keep what they must."""
import pytest, torch
from gptcourse.train import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint, save_step


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def test_a_changed_header_byte_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / 'c.safetensors', _model(), step=1234, lr=0.0006)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], 'little')
    header = raw[8:8 + n]
    assert b'1234' in header
    (tmp_path / 'd.safetensors').write_bytes(raw[:8] + header.replace(b'1234', b'9234') + raw[8 + n:])
    with pytest.raises(CheckpointError, match='do not match the sha256'): load_checkpoint(tmp_path / 'd.safetensors')
    assert load_checkpoint(path)['step'] == 1234


def test_non_finite_weights_are_never_written(tmp_path):
    m = _model()
    save_step(tmp_path, 10, m, keep=2); save_step(tmp_path, 20, m, keep=2)
    with torch.no_grad(): m.weight[0, 0] = float('nan')
    with pytest.raises(CheckpointError, match='hold NaN or inf'): save_step(tmp_path, 30, m, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000010.safetensors', 'step_0000020.safetensors']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['step_0000010.safetensors', 'step_0000020.safetensors']


@pytest.mark.parametrize('keep', [0, -1])
def test_keep_below_one_is_refused_before_anything_is_deleted(tmp_path, keep):
    save_step(tmp_path, 10, _model())
    with pytest.raises(ValueError, match='keep must be at least 1'): save_step(tmp_path, 20, _model(), keep=keep)
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step_0000010.safetensors']


def test_meta_must_be_json(tmp_path):
    with pytest.raises(TypeError, match='JSON-serialisable'): save_checkpoint(tmp_path / 'x.safetensors', _model(),
                                                                              bad={1, 2})
    assert list(tmp_path.iterdir()) == []
