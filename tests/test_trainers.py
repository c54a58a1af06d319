"""Lesson 19 beyond its notebook: the character trainer's resume at any step, runs it refuses, one run per
folder, what `--overwrite` may and may not delete, your own text, a checkpoint that lies about its sizes, and
the lecture preset on a CPU. CPU only, tiny sizes."""

import subprocess, sys
import pytest
import torch

from gptcourse.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from gptcourse.files import FolderBusy
from gptcourse.trainers import CHAR_PRESETS, train_char

QUIET = dict(progress=False, log=lambda *a: None)


def test_char_resume_is_exact_at_any_step_with_dropout(tmp_path):
    """Stopped at step 7 (not an evaluation step) and resumed == never stopped, with dropout on (RNG states
    restored)."""
    run = CHAR_PRESETS['cpu'].changed(
        dropout=0.1, n_layer=2, n_embd=32, batch_size=8, max_steps=12, eval_interval=5, eval_iters=2
    )[0]
    straight = train_char(run, tmp_path / 'a', device='cpu', **QUIET)
    train_char(run, tmp_path / 'b', device='cpu', stop_after=7, **QUIET)
    resumed = train_char(None, tmp_path / 'b', resume=True, device='cpu', **QUIET)
    assert resumed.history.loss == straight.history.loss
    assert all(
        torch.equal(a, b)
        for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values())
    )


def test_char_runs_refuse_what_would_lose_or_repeat_work(tmp_path):
    kw = dict(eval_interval=5, eval_iters=1, device='cpu', **QUIET)
    train_char('cpu', tmp_path / 'run', max_steps=5, **kw)
    with pytest.raises(ValueError, match='already holds a run'):
        train_char('cpu', tmp_path / 'run', max_steps=10, **kw)
    with pytest.raises(ValueError, match='nothing to do: the run is at step 5'):
        train_char(None, tmp_path / 'run', resume=True, **kw)
    with pytest.raises(CheckpointError, match='no checkpoint at .*none: no such file or folder'):
        train_char(None, tmp_path / 'none', resume=True, **kw)


def test_a_folder_belongs_to_one_run(tmp_path):
    """A second trainer in a folder another holds is refused at once, whatever its kind; the first is
    untouched."""
    started = subprocess.Popen(
        [
            sys.executable,
            '-c',
            f'''
from gptcourse.trainers import train_char
train_char('cpu', {str(tmp_path / "run")!r}, max_steps=100000, eval_interval=50000, device='cpu',
progress=False,
           log=lambda *a: None)''',
        ]
    )
    try:
        for _ in range(300):
            if (tmp_path / 'run' / '.lock').exists() and (tmp_path / 'run' / '.lock').read_text():
                break
            import time

            time.sleep(0.1)
        with pytest.raises(FolderBusy, match=f'in use by another training run \\(pid {started.pid}'):
            train_char('cpu', tmp_path / 'run', max_steps=5, overwrite=True, **QUIET)
    finally:
        started.kill()
        started.wait()
    train_char('cpu', tmp_path / 'run', max_steps=2, eval_interval=1, eval_iters=1, **QUIET)  # free again


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path):
    kw = dict(eval_interval=5, eval_iters=1, device='cpu', **QUIET)
    train_char('cpu', tmp_path / 'run', max_steps=5, **kw)
    before = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path / 'run')}
    with pytest.raises(ValueError, match='nothing to do'):  # stopped before any step: the old run is back
        train_char('cpu', tmp_path / 'run', max_steps=5, stop_after=7, overwrite=True, **kw)
    assert {p.name: p.read_bytes() for p in list_checkpoints(tmp_path / 'run')} == before
    train_char(
        'cpu',
        tmp_path / 'run',
        max_steps=3,
        eval_interval=3,
        overwrite=True,
        eval_iters=1,
        device='cpu',
        **QUIET,
    )
    assert [p.name for p in list_checkpoints(tmp_path / 'run')] == ['step_0000003.safetensors']
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['step_0000003.safetensors']


def test_your_own_text_and_its_resume(tmp_path):
    "Any UTF-8 text trains with its own vocabulary; a changed text is refused on resume."
    text = tmp_path / 'poem.txt'
    text.write_text('Ünïcödé and ascii, mixed, over and over. ' * 400, encoding='utf-8')
    res = train_char(
        'cpu', tmp_path / 'run', text=str(text), max_steps=20, eval_interval=10, eval_iters=1, **QUIET
    )
    meta = load_checkpoint(res.checkpoint)
    assert meta['tokenizer']['chars'] == ''.join(sorted(set(text.read_text(encoding='utf-8'))))
    text.write_text('Another text entirely, not the same one. ' * 400)
    with pytest.raises(ValueError, match='changed since the run started'):
        train_char(None, tmp_path / 'run', resume=True, max_steps=30, **QUIET)


def test_a_checkpoint_whose_config_claims_other_sizes_is_skipped_before_a_model_is_built(tmp_path):
    """A verified newest checkpoint whose run and config say 100,000 layers (its tensors: 4) is skipped, by
    name."""
    from gptcourse.checkpoint import save_checkpoint

    kw = dict(eval_interval=5, eval_iters=1, device='cpu', **QUIET)
    res = train_char('cpu', tmp_path / 'run', max_steps=10, **kw)
    meta = load_checkpoint(res.checkpoint)
    meta['config']['n_layer'] = 100
    save_checkpoint(tmp_path / 'run' / 'step_0000020.safetensors', res.model, **(meta | {'step': 20}))
    said = []
    again = train_char(
        None, tmp_path / 'run', resume=True, max_steps=12, device='cpu', progress=False, log=said.append
    )
    assert again.start_step == 10 and any(
        'skipping step_0000020' in s and 'missing transformer.h.4.' in s for s in said
    ), said


def test_the_lecture_preset_on_a_cpu_says_so_and_how_long(tmp_path):
    "A learner who starts the GPU preset on a laptop learns it in the first seconds, not after hours."
    lines = []
    train_char(
        'lecture',
        None,
        device='cpu',
        progress=False,
        log=lines.append,
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        batch_size=2,
        max_steps=25,
        eval_interval=20,
        eval_iters=2,
    )
    assert lines[1].startswith('the lecture preset is sized for a GPU: on a CPU it takes hours'), lines
    est = [x for x in lines if x.startswith('about ')]
    assert len(est) == 1 and ' to step 25 at this speed (' in est[0], lines
    cpu = []
    train_char('cpu', None, progress=False, log=cpu.append, max_steps=25, eval_interval=20, eval_iters=2)
    assert not any('sized for a GPU' in x for x in cpu) and sum(x.startswith('about ') for x in cpu) == 1, cpu


def test_a_new_run_over_a_finished_one_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    "A new run pointed at a finished run's folder built its model (and read its text) before it was refused."
    from gptcourse import trainers

    kw = dict(eval_interval=5, eval_iters=1, device='cpu', **QUIET)
    train_char('cpu', tmp_path / 'run', max_steps=5, **kw)
    before = {p.name: p.read_bytes() for p in (tmp_path / 'run').iterdir()}
    monkeypatch.setattr(trainers.GPT, '__init__', lambda *a, **k: pytest.fail('a model was built'))
    monkeypatch.setattr(trainers, 'read_text', lambda *a, **k: pytest.fail('the text was read'))
    with pytest.raises(ValueError, match=r'run already holds a run \(step_0000005.safetensors\): resume it'):
        train_char('cpu', tmp_path / 'run', max_steps=10, **kw)
    assert {p.name: p.read_bytes() for p in (tmp_path / 'run').iterdir()} == before


def test_the_end_line_of_a_run_that_went_on_past_its_preset_gives_its_own_last_loss():
    """A run resumed from the preset's 3,000 steps to 4,000 ended with the step-3000 loss alone, as if it had
    not gone on; and `plot` of a run stopped at 3,500 of 4,000 said it went on to 4,000."""
    from gptcourse.train import History
    from gptcourse.trainers import judge_char

    run = CHAR_PRESETS['cpu'].changed(max_steps=4000)[0]
    h = History(eval_step=[0, 3000, 4000], val_loss=[4.2, 1.9, 1.8])
    assert judge_char(run, h).startswith(
        "val loss 1.9000 at step 3000 (the preset's last step; this run's last, step 4000: 1.8000): in the "
        'reference range 1.83-1.96'
    ), judge_char(run, h)
    h = History(eval_step=[3000, 3500], val_loss=[1.9, 1.85])
    assert "(the preset's last step; this run's last, step 3500: 1.8500): in the" in judge_char(run, h)
    h = History(eval_step=[3000], val_loss=[1.9])
    assert judge_char(run, h).startswith('val loss 1.9000 at step 3000: in the reference range')


def test_a_resumed_run_past_its_preset_s_end_is_judged_with_its_real_last_loss(tmp_path, monkeypatch):
    """`train --resume --max-steps 4000` of a cpu run finished at 3000 graded the step-3000 loss and said
    nothing of the last one. Here the cpu preset at small steps, its reference step moved to 20: resumed to
    30, the end line gives step 30's loss too."""
    from gptcourse.trainers import CHAR_REFERENCE

    monkeypatch.setitem(CHAR_REFERENCE, 'cpu', (20, 0.0, 9.9, 'a test range'))
    kw = dict(eval_interval=10, device='cpu', progress=False)
    said = []
    first = train_char('cpu', tmp_path / 'run', max_steps=20, log=said.append, **kw)
    at20 = first.history.val_loss[-1]
    assert said[-1] == f'val loss {at20:.4f} at step 20: in the reference range 0.00-9.90 (a test range)'
    said.clear()
    res = train_char(None, tmp_path / 'run', resume=True, max_steps=30, log=said.append, **kw)
    h = res.history
    assert h.eval_step == [0, 10, 20, 30] and h.val_loss[2] == at20 and h.val_loss[3] != at20
    assert said[-1] == (
        f"val loss {at20:.4f} at step 20 (the preset's last step; this run's last, step 30: "
        f"{h.val_loss[-1]:.4f}): in the reference range 0.00-9.90 (a test range)"
    ), said
