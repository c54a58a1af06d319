"""Lesson 18's loop beyond its notebook: clipping against the hand-clipped step in float32 and in float16 (the
gradient unscaled before its norm is taken), evaluation in eval mode without touching the random state, and
both trainers running this one loop."""

import math
import pytest
import torch
from gptcourse.loop import Report, Run, TrainHistory, train_loop
from gptcourse.speed import Precision
from gptcourse.train import estimate_loss

QUIET = dict(log=lambda *a: None, progress=False)


class Quadratic(torch.nn.Module):
    "loss = sum(w · x) · k: its gradient is k · x, known by hand."

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x, k):
        return None, (self.w * x).sum() * k


@pytest.mark.parametrize('dtype', ['float32', 'float16'])
@pytest.mark.parametrize('scale', [0.1, 10.0])  # a gradient inside the bound, and one clipped down to it
def test_the_step_is_the_hand_clipped_gradient_step(dtype, scale):
    x = torch.tensor([3.0, -4.0, 0.0, 12.0])  # norm 13
    model = Quadratic()
    run = type('ClippedRun', (Run,), {'grad_clip': 1.0})(lr=0.5, max_steps=1, eval_interval=0, eval_iters=1)
    report = Report(run, TrainHistory(), range(1), 1, **QUIET)
    train_loop(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        lambda split: (x, torch.tensor(scale)),
        run,
        Precision('cpu', dtype),
        range(1),
        report,
    )
    grad = scale * x
    norm = grad.norm().item()
    want = -0.5 * grad * min(1.0, 1.0 / (norm + 1e-6))  # SGD's step along the clipped gradient
    assert torch.allclose(model.w.detach(), want, rtol=1e-3, atol=1e-6), (model.w, want)
    assert math.isclose(report.history.grad_norm[0], norm, rel_tol=1e-3)  # the norm of the true gradient


def test_estimate_loss_is_the_eval_mode_mean_and_draws_no_random_numbers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    batches = [(torch.randn(2, 4), torch.randn(2, 4)) for _ in range(3)]

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x, y):
            return None, torch.nn.functional.mse_loss(self.net(x), y)

    m = Wrapped().train()
    it = iter(batches * 2)
    state = torch.get_rng_state()
    got = estimate_loss(m, lambda split: next(it), eval_iters=3, splits=('val',))['val']
    assert torch.equal(torch.get_rng_state(), state) and m.training  # no draws; train mode back
    with torch.no_grad():
        want = sum(torch.nn.functional.mse_loss(model[0](x), y).item() for x, y in batches) / 3  # no dropout
    assert math.isclose(got, want, rel_tol=1e-6), (got, want)


def test_a_resumed_loop_does_not_evaluate_its_first_step_twice():
    calls = []
    run = Run(lr=1e-3, max_steps=4, eval_interval=2, eval_iters=1)
    model = Quadratic()
    history = TrainHistory(
        eval_step=[2], train_loss=[1.0], val_loss=[1.0]
    )  # step 2 evaluated before the stop
    report = Report(run, history, range(2, 4), 1, **QUIET)
    report.evaluated = lambda step, losses: (calls.append(step), history.log_eval(step, losses))
    x = torch.ones(4)
    train_loop(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        lambda split: (x, torch.tensor(1.0)),
        run,
        Precision('cpu'),
        range(2, 4),
        report,
    )
    assert calls == [4] and history.eval_step == [2, 4]


def test_both_trainers_run_lesson_18s_loop(monkeypatch, tmp_path):
    import gptcourse.trainers as T
    from gptcourse.pretrain import train_gpt2

    seen = []
    real = T.train_loop
    monkeypatch.setattr(T, 'train_loop', lambda *a, **k: (seen.append(type(a[3]).__name__), real(*a, **k))[1])
    T.train_char('cpu', None, max_steps=2, eval_interval=0, eval_iters=1, device='cpu', **QUIET)
    train_gpt2('cpu', None, max_steps=2, eval_interval=0, batch_size=2, seq_len=32, total_batch=64, **QUIET)
    assert seen == ['CharRun', 'GPT2Run']


def test_the_time_left_counts_only_the_steps_still_to_run():
    "After 2,990 of 3,000 steps at 0.1 s: 10 steps (1 s) and the last evaluation (2 × 50 × 0.1 / 3 s)."
    from gptcourse.loop import eta

    run = Run(lr=1e-3, max_steps=3000, eval_interval=500, eval_iters=50)
    assert eta(run, TrainHistory(dt=[0.1] * 10), 2990, 3000).startswith('about 4 s to step 3000')
    assert eta(run, TrainHistory(dt=[0.1] * 10), 10, 3000).startswith('about 5 min')  # 299 s + 6 × 3.3 s


def test_mfu_counts_attention_over_the_sequence_trained_not_the_context():
    "flops per token, by hand: 6·N + 12·L·H·Q·T, T the run's seq_len (32), not the block size (64)."
    import gptcourse.trainers as T
    from gptcourse.pretrain import train_gpt2

    res = train_gpt2(
        'cpu', None, max_steps=1, eval_interval=0, batch_size=2, seq_len=32, total_batch=64, **QUIET
    )
    cfg, n = res.model.config, res.model.num_params(non_embedding=True)
    job = T.Job(res.run, res.model, None, None, None, None, 64, 32)
    report = T.TrainerReport(res, range(1), job, lambda *a: None, False)
    assert (
        cfg.block_size == 64
        and report.fpt == 6 * n + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * 32
    )
