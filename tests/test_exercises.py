"""Every exercise's check, tested three ways: on its solution (nbs/solutions.ipynb) it passes, on its starter
(the lesson's own cell) it says "not done yet", and on a planted wrong answer it fails with a message that
says what is wrong. A check that passed a wrong answer would be a defect, so every exercise has one here."""

import hashlib, json, math, re
from pathlib import Path
import numpy as np
import pytest, torch
import torch.nn as nn
from torch.nn import functional as F
from gptcourse.exercises import EXERCISES, check
from gptcourse.modern import ModernConfig, ModernGPT  # what lesson 26's starters build on

ROOT = Path(__file__).resolve().parent.parent
CHECK = re.compile(r"^check\('(\d\d\.\d)', (\w+)\)$", re.M)


def answers(nb: Path) -> dict:
    """{exercise: the answer its cell passes to `check`}, each cell run without its `check` line, in one
    namespace per notebook (a later answer may use an earlier one, as in the notebook)."""
    found, ns = {}, {'torch': torch, 'nn': nn, 'F': F, 'math': math}
    ns |= {'ModernGPT': ModernGPT, 'ModernConfig': ModernConfig}
    for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or not (m := CHECK.search(src)):
            continue
        exec(CHECK.sub('', src), ns)
        found[m[1]] = ns[m[2]]
    return found


SOLUTIONS = answers(ROOT / 'nbs' / 'solutions.ipynb')
STARTERS = {k: v for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')) for k, v in answers(nb).items()}


class WrongHeads(nn.Module):  # 05.1 planted: the heads' outputs averaged instead of placed side by side
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        return self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))  # one head of width C


def unmasked_addition(a, b, n):  # 08.3 planted: the sum reversed, but the prompt's targets not masked
    text = f'{a:0{n}d}+{b:0{n}d}=' + f'{a + b:0{n + 1}d}'[::-1]
    ids = torch.tensor(['0123456789+='.index(c) for c in text])
    return ids[:-1], ids[1:]


class WrongScaleNorm(nn.Module):  # 26.1 planted: RMSNorm's scale (the mean square), not the vector's length
    def __init__(self, n):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(math.sqrt(n)))

    def forward(self, x):
        return self.g * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


def kth_largest(x, k):  # 09.2 planted: one logit too many kept (where there are more than k)
    return torch.topk(x, min(k, x.size(-1))).values[:, [-1]]


def write_in_place(path, chunks):  # 10.1 planted: straight into the file, so a failed write leaves half
    with open(path, 'wb') as f:
        for chunk in chunks:
            f.write(chunk)


def stream_starts(shards, a, b):  # 11.1 planted: each start counted from the stream's beginning
    out, pos = [], 0
    for s in shards:
        lo, hi = max(a, pos), min(b, pos + s['tokens'])
        if lo < hi:
            out.append({'file': s['file'], 'start': lo, 'tokens': hi - lo})
        pos += s['tokens']
    return out


def lr_to_zero(step, max_lr, warmup_steps, max_steps):  # 14.1 planted: the cosine decays to 0, not to 10%
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    d = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * d)) * max_lr


def accumulate_by_count(model, x, y, sizes):  # 14.2 planted: each loss divided by the number of micro-batches
    model.zero_grad(set_to_none=True)
    mean = 0.0
    for xm, ym in zip(x.split(sizes), y.split(sizes)):
        loss = model(xm, ym)[1] / len(sizes)
        loss.backward()
        mean += loss.item()
    return mean


def ddp_summed(model, x, y, world_size):  # 15.1 planted: the ranks' gradients summed, not averaged
    per_rank = []
    for xr, yr in zip(x.chunk(world_size), y.chunk(world_size)):
        model.zero_grad(set_to_none=True)
        model(xr, yr)[1].backward()
        per_rank.append([p.grad.clone() for p in model.parameters()])
    return [sum(g) for g in zip(*per_rank)]


def env_unchecked(env):  # 15.2 planted: torchrun's variables read, but a rank outside the world let through
    rank = int(env.get('RANK', 0))
    return rank, int(env.get('LOCAL_RANK', rank)), int(env.get('WORLD_SIZE', 1))


class WeightsOnly:  # 16.1 planted: copies of the weights, but not the optimizer's state nor the random state
    def __init__(self, model, optimizer):
        self.weights = {k: v.clone() for k, v in model.state_dict().items()}

    def restore(self, model, optimizer):
        model.load_state_dict(self.weights)


def bytes_only(tensors):  # 16.2 planted: the values' bytes hashed, not the names, dtypes or shapes
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ending_loss_summed(logits, tokens, mask):  # 17.1 planted: the sum over the ending, not the mean
    V = logits.size(-1)
    losses = F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1), reduction='none')
    return (losses.view(len(tokens), -1) * mask[:, 1:]).sum(1)


def render_all_masked(ctx, endings):  # 17.2 planted: the mask 1 on the context too
    L = max(len(ctx) + len(e) for e in endings)
    tokens, mask = torch.zeros(4, L, dtype=torch.long), torch.zeros(4, L, dtype=torch.long)
    for i, e in enumerate(endings):
        tokens[i, : len(ctx) + len(e)] = torch.tensor(ctx + e)
        mask[i, : len(ctx) + len(e)] = 1
    return tokens, mask


def clip_each(params, max_norm):  # 18.1 planted: each tensor clipped by its own norm
    total = torch.cat([p.grad.flatten() for p in params]).norm().item()
    for p in params:
        p.grad.mul_(min(1.0, max_norm / (p.grad.norm().item() + 1e-6)))
    return total


def plan_of_one_process(run, world_size):  # 20.1 planted: the micro-steps of one process alone
    return run.total_batch // (run.batch_size * run.seq_len), run.max_steps * run.total_batch


def mfu_of_all_gpus(run, step_seconds, world_size, peak):  # 20.2 planted: every GPU's tokens over one's peak
    from gptcourse.gpt2 import GPT, GPTConfig
    from gptcourse.speed import flops_per_token

    with torch.device('meta'):
        model = GPT(GPTConfig(run.block_size, run.vocab_size, run.n_layer, run.n_head, run.n_embd))
    fpt = flops_per_token(model.config, model.num_params(non_embedding=True), run.seq_len)
    return run.total_batch / step_seconds * fpt / peak


def extend_resorted(model, tok, text):  # 27.1 planted: the vocabulary sorted again, so old characters move
    from dataclasses import replace
    from gptcourse.data import CharTokenizer
    from gptcourse.gpt2 import GPT

    new = sorted(set(text) - set(tok.stoi))
    bigger = GPT(replace(model.config, vocab_size=tok.vocab_size + len(new)))
    state = model.state_dict()
    for name in ('transformer.wte.weight', 'lm_head.weight', 'lm_head.bias'):
        w = state[name]
        state[name] = torch.cat([w, w.mean(0, keepdim=True).expand(len(new), *w.shape[1:])])
    bigger.load_state_dict(state)
    return bigger, CharTokenizer.from_text(tok.chars + text)


def tuned_from_scratch(preset, init, text, out_dir, steps, lr, scratch_steps, **changes):  # 27.2 planted:
    from gptcourse.finetune import finetune_char  # the "fine-tuned" run does not start from init

    losses = {}
    for name, n, given in (('fine-tuned', steps, {'lr': lr}), ('from scratch', scratch_steps, {})):
        r = finetune_char(preset, out_dir / name, text=text, max_steps=n, eval_interval=n, **given, **changes)
        losses[name] = (r.history.val_loss[0], r.history.val_loss[-1])
    return losses


def quantize_symmetric(W, group):  # 23.1 planted: lesson 23's symmetric int8, 128 as its zero point
    from gptcourse.quantize import quantize

    q, scale = quantize(W, group)
    return (q.short() + 128).to(torch.uint8), scale, torch.full_like(scale, 128, dtype=torch.int16)


def floor_of_parameters(model, bits, group, scale_bytes, gb_per_s):  # 23.2 planted: the tied matrix
    mats = [p for n, p in model.named_parameters() if p.dim() == 2 and 'wpe' not in n]  # listed once, by
    n_w = sum(p.numel() for p in mats) - model.transformer.wte.weight.numel()  # parameters(), as wte
    n_b = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None)
    return gb_per_s * 1e9 / (n_w * bits / 8 + n_w / group * scale_bytes + 4 * n_b)


def attend_unscaled(q, K, V):  # 30.1 planted: the scores not divided by √hd
    return (torch.softmax((K @ q[..., None])[..., 0], -1)[:, None] @ V)[:, 0]


def decode_uncached(model, token, cache):  # 30.2 planted: attends over its own k and v, never stores them
    c, t, pos = model.config, model.transformer, cache.length
    nh, hd = c.n_head, c.n_embd // c.n_head
    norm = lambda ln, x: F.layer_norm(x, (c.n_embd,), ln.weight, ln.bias)
    linear = lambda layer, x: F.linear(x, layer.weight, layer.bias)
    x = t.wte.weight[token] + t.wpe.weight[pos]
    for l, b in enumerate(t.h):
        q, k, v = linear(b.attn.c_attn, norm(b.ln_1, x)).split(c.n_embd)
        K, V = (torch.cat([m[l][0, :, :pos], n.view(nh, 1, hd)], 1) for m, n in ((cache.k, k), (cache.v, v)))
        y = F.scaled_dot_product_attention(q.view(nh, 1, hd), K, V)[:, 0]
        x = x + linear(b.attn.c_proj, y.reshape(-1))
        h = linear(b.mlp.c_fc, norm(b.ln_2, x))
        h = F.gelu(h, approximate='tanh') if c.activation == 'gelu_tanh' else F.relu(h)
        x = x + linear(b.mlp.c_proj, h)
    cache.length = pos + 1
    return linear(model.lm_head, norm(t.ln_f, x))


WRONG = {  # exercise: (a wrong answer, what the check must say)
    '00.1': (lambda t: ({c: i for i, c in enumerate(set(t))}, dict(enumerate(set(t)))), 'sorted order'),
    '00.2': (lambda d, bs, n, g: (d[:bs].repeat(n, 1), d[1 : bs + 1].repeat(n, 1)), 'the same'),
    '01.1': (lambda v: 1 / v, 'uniform predictions give'),
    '01.2': (lambda ids, v: torch.bincount(ids[1:] * v + ids[:-1], minlength=v * v).view(v, v), 'follows'),
    '02.1': (lambda logits, t: F.softmax(logits * t, dim=-1), 'at temperature 0.5'),
    '02.2': (lambda ps, lr: [p.data.add_(lr * p.grad) for p in ps], 'differs from torch.optim.SGD'),
    '03.1': (lambda x: x.cumsum(1), 'is not the mean'),
    '03.2': (lambda T: torch.full((T, T), 1 / T), 'the future must get exactly 0'),
    '04.1': (lambda q, k, v: F.softmax(q @ k.transpose(-2, -1), dim=-1) @ v, 'sees only itself'),
    '04.2': (lambda q, k: q @ k.transpose(-2, -1), 'times q·k/√head_size'),
    '05.1': (WrongHeads, 'outputs differ from MultiHeadAttention'),
    '05.2': (lambda c, h: 4 * c * c, 'the module has'),
    '06.1': (lambda x, w: F.layer_norm(x, (x.size(-1),), w), 'subtracts no mean'),
    '06.2': (lambda c, h: 12 * c * c, 'the Block has'),
    '07.1': (lambda m, x, y: m(x, y)[1].item(), 'with dropout off'),
    '07.2': (lambda m, idx: F.softmax(m(idx[:, :8])[0][:, -1], -1), 'after the last 8 tokens'),
    '08.1': (lambda L, C, V, T: 2 * V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C, 'it has 124,439,808'),
    '08.2': (lambda L: 0.02 / math.sqrt(L), 'the c_proj weights'),
    '08.3': (unmasked_addition, 'masked'),
    '26.1': (WrongScaleNorm, 'differs from g·x/‖x‖'),
    '26.2': (ModernGPT, 'all ScaleNorm'),  # planted: the model without the change
    '09.1': (lambda w: w.reshape(w.size(1), w.size(0)), 'differs from the Conv1D'),
    '09.2': (lambda x, k: x.masked_fill(x < kth_largest(x, k + 1), -math.inf), 'the 1 largest must stay'),
    '10.1': (write_in_place, 'it must keep the old bytes'),
    '10.2': (lambda name: name.endswith('.tmp'), 'a live writer'),
    '11.1': (stream_starts, 'read back tokens'),
    '11.2': (lambda docs: np.array([t for d in docs for t in d + [50256]], np.uint16), 'before each'),
    '12.1': (lambda step, rank, ws, B, T: (step + rank) * B * T, 'is 6; the loader reads from token 24'),
    '12.2': (lambda n, B, T, ws: n // (ws * B * T), 'the loader takes 7'),
    '13.1': (lambda n, L, H, C, T: 6 * n, 'FlopCounterMode counts'),
    '13.2': (lambda v, m: (v // m + 1) * m, 'pad_vocab(50304, 128) is 50432'),
    '14.1': (lr_to_zero, 'half-way through the decay'),
    '14.2': (accumulate_by_count, "differ from the whole batch's"),
    '15.1': (ddp_summed, 'norms: ×4.00'),
    '15.2': (env_unchecked, 'setup_distributed refuses it: RANK=4 is outside WORLD_SIZE=4'),
    '16.1': (WeightsOnly, 'the random state was not restored'),
    '16.2': (bytes_only, 'changing a name leaves the digest'),
    '17.1': (ending_loss_summed, 'token by token'),
    '17.2': (render_all_masked, "1 on the ending's tokens only"),
    '18.1': (clip_each, 'clip_grad_norm_ leaves 1.0000'),
    '18.2': (lambda dts, done, end: sum(dts) / len(dts) * (end - done), 'the median of the last ten steps'),
    '19.1': (lambda v, lo, hi: 0.0 if lo <= v <= hi else v - lo, 'distance(2.0, 1.83, 1.96) is 0.170'),
    '19.2': (lambda changes: set(changes) <= {'seed'}, "has_reference({'dtype': 'float32'}) is False"),
    '20.1': (plan_of_one_process, 'world_size=8) is (8, 9999745024); expected (1,'),
    '20.2': (mfu_of_all_gpus, 'lesson 13 gives'),
    '23.1': (quantize_symmetric, 'should about halve it'),
    '23.2': (floor_of_parameters, 'leaves out the output layer'),
    '27.1': (extend_resorted, 'an old character keeps its id'),
    '27.2': (tuned_from_scratch, "init's model scores"),
    '30.1': (attend_unscaled, 'the scores are not divided by √hd'),
    '30.2': (decode_uncached, 'is not in the cache: store k and v'),
}


def test_every_exercise_has_a_starter_a_solution_and_a_wrong_answer_here():
    assert set(EXERCISES) == set(SOLUTIONS) == set(STARTERS) == set(WRONG), (
        set(EXERCISES) ^ set(SOLUTIONS),
        set(EXERCISES) ^ set(STARTERS),
    )
    assert len(EXERCISES) >= 45


@pytest.mark.parametrize('ex', sorted(EXERCISES))
def test_the_check_passes_the_solution_waits_for_the_starter_and_fails_a_wrong_answer(ex, capsys):
    assert check(ex, SOLUTIONS[ex]) is True, capsys.readouterr().out
    assert check(ex, STARTERS[ex]) is None
    assert 'not done yet' in capsys.readouterr().out
    wrong, says = WRONG[ex]
    assert check(ex, wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(f'✗ exercise {ex}: ') and says in out and len(out.strip().splitlines()) == 1, out


ROWS = [('lm_head.weight', 'output row and bias must be the means'), ('transformer.wte.weight', 'embedding')]


@pytest.mark.parametrize('part, says', ROWS)
def test_the_vocabulary_check_sees_new_rows_that_are_not_means(part, says, capsys):
    "27.1 planted again: the ids right, but the new rows of one tensor random instead of the old rows' mean."

    def random_rows(model, tok, text):
        bigger, tok2 = SOLUTIONS['27.1'](model, tok, text)
        with torch.no_grad():
            bigger.get_parameter(part)[tok.vocab_size :].normal_(std=0.02)
        return bigger, tok2

    assert check('27.1', random_rows) is False
    assert says in capsys.readouterr().out


def test_an_answer_that_raises_is_one_line_and_an_unknown_exercise_is_refused(capsys):
    assert check('03.2', lambda T: torch.zeros(T)[T]) is False
    assert 'your answer raised IndexError' in capsys.readouterr().out
    with pytest.raises(ValueError, match="no exercise '99.9'; there are 00.1, 00.2"):
        check('99.9', None)
