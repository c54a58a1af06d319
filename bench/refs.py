"""The course side by side with the lectures' own code, on one machine in one run.

The reference code is never committed: fetch it into the git-ignored refs/ folder first.

    git clone https://github.com/karpathy/ng-video-lecture refs/ng-video-lecture
    git clone https://github.com/karpathy/build-nanogpt refs/build-nanogpt
    python bench/refs.py gptpy             # the lecture's gpt.py vs the course, lecture char preset (a GPU)
    python bench/refs.py train_gpt2        # build-nanogpt's train_gpt2.py vs the course's trainer (a GPU)
    python bench/refs.py gptpy --dry-run   # toy sizes, any machine (what CI would run if refs/ were there)

gptpy: the lecture's gpt.py runs as written (float32, eager) except for its hyper-parameters (the steps;
evaluations only at the first and last step, as gpt.py does when eval_interval equals the steps), a timer
around its training loop, and a 20-character final sample. The course then trains, with `fit`, the same steps,
batch, learning rate and evaluations: lesson 07's CharGPT in float32 (the same computation as gpt.py), CharGPT
under the device policy (bfloat16 on recent GPUs), and the GPT char configuration that `gptcourse train` uses,
under the device policy. Printed for each: seconds for the loop (evaluations included), steps/s, the last
validation loss.

train_gpt2: build-nanogpt's train_gpt2.py runs as written (bfloat16, TF32, flash attention, fused AdamW)
except for B, T, the total batch, the steps and warm-up, compile on (as in the lecture's timings), HellaSwag
and sampling off, and its data folder: Tiny Shakespeare shards made by `gptcourse.shards.prepare`, which the
course's `train_gpt2` reads, with the same tokens written as one file per split under the names
train_gpt2.py's loader looks for; both run with the same settings. Printed for each: median tokens/s after the
warm-up steps, and MFU.

Each patch must match the reference exactly once, so a changed reference stops the run with one line instead
of silently measuring something else."""

from __future__ import annotations
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
REFS = ROOT / 'refs'
GPT_PY = REFS / 'ng-video-lecture' / 'gpt.py'
TRAIN_GPT2 = REFS / 'build-nanogpt' / 'train_gpt2.py'


def patch(src: str, changes: list[tuple[str, str]], name: str) -> str:
    "`src` with each regular expression of `changes` replaced; each must match exactly once."
    for pattern, new in changes:
        found = len(re.findall(pattern, src, flags=re.M))
        if found != 1:
            sys.exit(
                f'{Path(sys.argv[0]).name}: {name} has changed: {pattern!r} matched {found} times, not once'
            )
        src = re.sub(pattern, lambda m: new, src, flags=re.M)
    return src


def hyper(**values) -> list[tuple[str, str]]:
    "Patches that set top-level assignments `name = value` of a script."
    return [
        (
            rf'^{k} = [^\n]*$',
            f'{k} = {v!r}' if not isinstance(v, str) or not v.startswith('=') else f'{k} {v}',
        )
        for k, v in values.items()
    ]


def run_script(path: Path, cwd: Path) -> tuple[str, float]:
    "Run `path` with this Python in `cwd`; its stdout and wall seconds (exits with its stderr on failure)."
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    if r.returncode:
        sys.exit(f'bench/refs.py: {path.name} failed:\n{r.stderr[-3000:]}')
    return r.stdout, time.perf_counter() - t0


def gptpy(dry: bool, steps: int | None, device: str):
    from dataclasses import asdict
    from gptcourse.chargpt import PRESETS, CharGPT, CharTraining
    from gptcourse.data import CharTokenizer, get_batch, tiny_shakespeare, train_val_split
    from gptcourse.gpt2 import GPT, char_config
    from gptcourse.speed import device_policy
    from gptcourse.train import set_seed
    from gptcourse.loop import Report, Run, TrainHistory, train_loop

    if not GPT_PY.exists():
        sys.exit(
            f'bench/refs.py: {GPT_PY} not found; git clone '
            'https://github.com/karpathy/ng-video-lecture refs/ng-video-lecture'
        )
    cfg = dict(asdict(PRESETS['lecture']), eval_iters=200)
    if dry:
        cfg.update(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=4, eval_iters=2)
    steps = steps or (10 if dry else 500)
    work = Path(tempfile.mkdtemp(prefix='refs-gptpy-'))
    text = tiny_shakespeare()
    (work / 'input.txt').write_text(text, encoding='utf-8')
    src = patch(
        GPT_PY.read_text(encoding='utf-8'),
        hyper(
            batch_size=cfg['batch_size'],
            block_size=cfg['block_size'],
            max_iters=steps,
            eval_interval=steps,
            learning_rate=cfg['lr'],
            device=device,
            eval_iters=cfg['eval_iters'],
            n_embd=cfg['n_embd'],
            n_head=cfg['n_head'],
            n_layer=cfg['n_layer'],
            dropout=cfg['dropout'],
        )
        + [
            (
                r'^for iter in range\(max_iters\):$',
                'import time as _time\n_t0 = _time.perf_counter()\nfor iter in range(max_iters):',
            ),
            (
                r'^# generate from the model$',
                "if device == 'cuda': torch.cuda.synchronize()\n"
                "print(f'loop seconds {_time.perf_counter() - _t0:.3f}')",
            ),
            (r'max_new_tokens=500\)', 'max_new_tokens=20)'),
        ],
        'gpt.py',
    )
    (work / 'gpt_bench.py').write_text(src, encoding='utf-8')
    out, _ = run_script(work / 'gpt_bench.py', work)
    shutil.rmtree(work, ignore_errors=True)
    val = float(re.findall(r'val loss ([\d.]+)', out)[-1])
    rows = [
        (
            "the lecture's gpt.py",
            float(re.search(r'loop seconds ([\d.]+)', out).group(1)),
            val,
            'float32, eager',
        )
    ]

    device_policy(device).set_tf32()
    tok = CharTokenizer.from_text(text)
    train_data, val_data = train_val_split(torch.tensor(tok.encode(text), dtype=torch.long))
    mcfg = CharTraining(**cfg).model_config(tok.vocab_size)
    for name, make, dtype in (
        ('course CharGPT', lambda: CharGPT(mcfg), 'float32'),
        ('course CharGPT', lambda: CharGPT(mcfg), 'auto'),
        ('course GPT (char config)', lambda: GPT(char_config(mcfg)), 'auto'),
    ):
        set_seed(1337)
        g = torch.Generator().manual_seed(1337)
        model = make().to(device)
        precision = device_policy(device, dtype).precision()
        batch = lambda split: get_batch(
            train_data if split == 'train' else val_data, cfg['batch_size'], cfg['block_size'], device, g
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg['lr'])
        if device == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run = Run(lr=cfg['lr'], max_steps=steps, eval_interval=steps, eval_iters=cfg['eval_iters'])
        h = TrainHistory()  # lesson 18's loop, as the trainers run it
        train_loop(
            model,
            optimizer,
            batch,
            run,
            precision,
            range(steps),
            Report(run, h, range(steps), 1, log=lambda *a: None, progress=False),
        )
        if device == 'cuda':
            torch.cuda.synchronize()
        rows.append(
            (name, time.perf_counter() - t0, h.val_loss[-1], str(precision.dtype).replace('torch.', ''))
        )
    print(
        f'lecture char preset{" (dry run: toy sizes)" if dry else ""}: {mcfg}; batch {cfg["batch_size"]}, '
        f'lr {cfg["lr"]}, {steps} steps, evaluations of {cfg["eval_iters"]} batches at the '
        f'first and last step'
    )
    for name, sec, val, how in rows:
        print(f'{name:<26} {sec:8.1f} s  {steps / sec:7.2f} steps/s  val loss {val:.4f}  [{how}]')
    print(
        f'ratio steps/s, course GPT (char config) / gpt.py: {rows[0][1] / rows[-1][1]:.2f}x; '
        f'course CharGPT float32 / gpt.py: {rows[0][1] / rows[1][1]:.2f}x'
    )


def train_gpt2_ref(dry: bool, steps: int | None, device: str):
    from gptcourse.gpt2 import GPTConfig
    from gptcourse.speed import flops_per_token, mfu, peak_flops
    from gptcourse.loader import read_split
    from gptcourse.shards import prepare
    from gptcourse.pretrain import train_gpt2

    if not TRAIN_GPT2.exists():
        sys.exit(
            f'bench/refs.py: {TRAIN_GPT2} not found; git clone '
            'https://github.com/karpathy/build-nanogpt refs/build-nanogpt'
        )
    from gptcourse.pretrain import GPT2_PRESETS

    preset = 'cpu' if dry else 'lecture'
    B, T, accum, warm = (2, 32, 2, 2) if dry else (16, 1024, 4, 5)
    steps = steps or (6 if dry else 30)
    r = GPT2_PRESETS[preset]  # the same sizes on both sides
    model = dict(
        block_size=r.block_size, vocab_size=r.vocab_size, n_layer=r.n_layer, n_head=r.n_head, n_embd=r.n_embd
    )
    compile_ = device == 'cuda' and not dry
    work = Path(tempfile.mkdtemp(prefix='refs-train-gpt2-'))
    prepare(None, work / 'shards', progress=False)
    (work / 'edu_fineweb10B').mkdir()  # the same tokens, one file per split, named as its loader looks for
    for split in ('train', 'val'):
        np.save(
            work / 'edu_fineweb10B' / f'edufineweb_{split}_000000.npy', read_split(work / 'shards', split)
        )
    src = patch(
        TRAIN_GPT2.read_text(encoding='utf-8'),
        hyper(total_batch_size=B * T * accum, B=B, T=T, use_compile=compile_, max_steps=steps, warmup_steps=2)
        + [
            (r'val_loss_steps = 20$', 'val_loss_steps = 2'),
            (r'^from hellaswag import render_example, iterate_examples$', '# HellaSwag is off'),
            (r'^enc = tiktoken.get_encoding\("gpt2"\)$', 'enc = None  # sampling is off'),
            (r'model = GPT\(GPTConfig\(vocab_size=50304\)\)', f'model = GPT(GPTConfig(**{model!r}))'),
            (r'if step > 0 and \(step % 5000 == 0 or last_step\):', 'if False:'),
            (r'if \(step % 250 == 0 or last_step\) and \(not use_compile\):', 'if False:'),
            (r'if \(\(step > 0 and step % 250 == 0\) or last_step\) and \(not use_compile\):', 'if False:'),
        ],
        'train_gpt2.py',
    )
    (work / 'train_bench.py').write_text(src, encoding='utf-8')
    out, _ = run_script(work / 'train_bench.py', work)
    ref_tps = [float(x) for x in re.findall(r'tok/sec: ([\d.]+)', out)][warm:]
    res = train_gpt2(
        preset,
        work / 'course',
        data=str(work / 'shards'),
        max_steps=steps,
        total_batch=B * T * accum,
        batch_size=B,
        seq_len=T,
        warmup_steps=2,
        eval_interval=0,
        checkpoint_interval=0,
        compile=compile_,
        progress=False,
        log=lambda *a: None,
        auto_batch=False,
    )
    shutil.rmtree(work, ignore_errors=True)
    cfg = GPTConfig(**model)
    n = res.model.num_params(non_embedding=True)
    fpt, peak = flops_per_token(cfg, n, T), peak_flops() if device == 'cuda' else None
    ours = res.tokens_per_sec[warm:]
    print(
        f'GPT-2 {"toy (dry run)" if dry else "124M"} ({preset} preset): {model}, B={B}, T={T}, '
        f'{B * T * accum:,} tokens per step ({accum} micro-steps), {steps} steps (median after {warm}), '
        f'compile {compile_}'
    )
    for name, tps in (("build-nanogpt's train_gpt2.py", ref_tps), ("course's train_gpt2", ours)):
        m = mfu(statistics.median(tps), fpt, peak)
        print(f'{name:<30} {statistics.median(tps):12,.0f} tokens/s' + (f'  MFU {m:.1%}' if m else ''))
    print(
        f'ratio tokens/s, course / train_gpt2.py: {statistics.median(ours) / statistics.median(ref_tps):.3f}'
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('which', choices=['gptpy', 'train_gpt2'])
    ap.add_argument('--dry-run', action='store_true', help='toy sizes, any machine')
    ap.add_argument(
        '--steps', type=int, default=None, help='training steps (default: 500 / 30; dry run 10 / 6)'
    )
    args = ap.parse_args(argv)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if not args.dry_run and device != 'cuda':
        sys.exit('bench/refs.py: the lecture sizes need a CUDA GPU; add --dry-run for toy sizes')
    print(
        f'device {torch.cuda.get_device_name() if device == "cuda" else "cpu"} | torch {torch.__version__} | '
        f'load {" ".join(f"{x:.2f}" for x in os.getloadavg())}'
    )
    (gptpy if args.which == 'gptpy' else train_gpt2_ref)(args.dry_run, args.steps, device)


if __name__ == '__main__':
    main()
