"""Training speed of the character model written two ways, side by side: lesson 07's lecture-faithful
`CharGPT` (one module per head, float32, eager) against its configuration of lesson 08's `GPT` on the fast
path (one fused qkv projection per block, `F.scaled_dot_product_attention`, autocast where available — bf16,
or fp16 + GradScaler — TF32 on CUDA, and optionally `torch.compile`).

    python bench/chargpt.py                          # --preset cpu without CUDA, lecture with CUDA
    python bench/chargpt.py --preset lecture --steps 300 --compile
    python bench/chargpt.py --preset cpu --steps 200 --threads 1

Both start from the same initial weights (the GPT gets the reference's weights through `GPT.from_chargpt`) and
see the same batches, for the same number of steps with the same optimizer settings. Printed: the device,
torch version, config, steps/s of each (the median step time after --warmup steps, evaluation excluded), their
ratio, and the validation loss of each after the same steps (the same val batches for both; the two losses
differ a little because dropout masks and rounding differ)."""

from __future__ import annotations
import argparse, os, platform, statistics, sys, time

import torch


def main(argv=None):
    from dataclasses import asdict
    from gptcourse.chargpt import PRESETS, CharGPT
    from gptcourse.gpt2 import GPT
    from gptcourse.data import tiny_shakespeare, CharTokenizer, train_val_split, get_batch
    from gptcourse.speed import device_policy
    from gptcourse.train import default_device, estimate_loss, set_seed
    from gptcourse.loop import Report, Run, TrainHistory, train_loop

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        '--preset',
        choices=sorted(PRESETS),
        default=None,
        help='model and batch sizes (default: lecture with CUDA, cpu without)',
    )
    ap.add_argument(
        '--steps',
        type=int,
        default=None,
        help='training steps of each model (default: 300 for cpu, 200 for lecture)',
    )
    ap.add_argument('--warmup', type=int, default=20, help='first steps left out of the timing (default: 20)')
    ap.add_argument('--eval-iters', type=int, default=None, help="validation batches (default: the preset's)")
    ap.add_argument('--device', default=None, help='cpu, cuda or mps (default: the best available)')
    ap.add_argument('--compile', action='store_true', help='torch.compile the fast model')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    ap.add_argument('--seed', type=int, default=1337)
    args = ap.parse_args(argv)

    device = args.device or default_device()
    preset = args.preset or ('lecture' if torch.device(device).type == 'cuda' else 'cpu')
    cfg = asdict(PRESETS[preset])
    steps = args.steps or (300 if preset == 'cpu' else 200)
    eval_iters = args.eval_iters or cfg['eval_iters']
    if args.threads:
        torch.set_num_threads(args.threads)
    if steps <= args.warmup:
        ap.error(f'--steps must be larger than --warmup ({args.warmup})')

    text = tiny_shakespeare()
    tok = CharTokenizer.from_text(text)
    train_data, val_data = train_val_split(torch.tensor(tok.encode(text), dtype=torch.long))
    mcfg = PRESETS[preset].model_config(tok.vocab_size)

    print('command:', ' '.join(['python'] + sys.argv) if argv is None else argv)
    print(
        f'device: {device}'
        + (
            f' ({torch.cuda.get_device_name()})'
            if torch.device(device).type == 'cuda'
            else f' ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
            f'{torch.get_num_threads()} torch threads)'
        )
    )
    print(f'torch {torch.__version__}, python {platform.python_version()}')
    print(
        f'preset {preset}: {mcfg}; batch {cfg["batch_size"]}, lr {cfg["lr"]}, {steps} steps (timing after '
        f'{args.warmup}), '
        f'val loss over {eval_iters} batches'
    )

    set_seed(args.seed)
    init = CharGPT(mcfg).state_dict()

    def run(name, fast: bool):
        ref = CharGPT(mcfg)
        ref.load_state_dict(init)
        model = (GPT.from_chargpt(ref) if fast else ref).to(device)
        policy = device_policy(device, 'auto' if fast else 'float32', compile=fast and args.compile)
        if fast:
            policy.set_tf32()  # TF32 (where the GPU has it) for the fast path only
        else:
            torch.set_float32_matmul_precision('highest')
        precision, net = policy.precision(), policy.compiled(model)
        set_seed(args.seed + 1)  # the same dropout stream and the same batches for both
        g = torch.Generator().manual_seed(args.seed)
        batch = lambda split: get_batch(
            train_data if split == 'train' else val_data, cfg['batch_size'], mcfg.block_size, device, g
        )
        opt = torch.optim.AdamW(model.parameters(), lr=cfg['lr'])
        t0 = time.perf_counter()
        run_cfg = Run(
            lr=cfg['lr'], max_steps=steps, eval_interval=0, eval_iters=1
        )  # lesson 18's loop, as trainers run it
        hist = TrainHistory()
        train_loop(
            net,
            opt,
            batch,
            run_cfg,
            precision,
            range(steps),
            Report(run_cfg, hist, range(steps), 1, log=lambda *a: None, progress=False),
        )
        wall = time.perf_counter() - t0
        vg = torch.Generator().manual_seed(args.seed + 2)
        vbatch = lambda split: get_batch(val_data, cfg['batch_size'], mcfg.block_size, device, vg)
        with precision.autocast():
            val = estimate_loss(model, vbatch, eval_iters, splits=('val',))['val']
        rate = 1 / statistics.median(hist.dt[args.warmup :])
        what = (
            f'fused qkv + SDPA, {str(precision.dtype).split(".")[-1]}'
            + (', TF32' if fast and torch.device(device).type == 'cuda' else '')
            + (', compiled' if fast and args.compile else '')
        )
        print(
            f'{name:13s} {rate:8.2f} steps/s  ({1000 / rate:7.1f} ms/step; {wall:6.1f} s for '
            f'{steps} steps incl. '
            f'warm-up)  '
            f'val loss {val:.4f}  [{what if fast else "one module per head, float32, eager"}]'
        )
        return rate, val

    r_ref, v_ref = run('CharGPT', fast=False)
    r_fast, v_fast = run('GPT (char)', fast=True)
    print(
        f'speed-up: {r_fast / r_ref:.2f}x   val loss after {steps} steps: {v_ref:.4f} (CharGPT) '
        f'vs {v_fast:.4f} '
        f'(GPT, char config), '
        f'difference {abs(v_ref - v_fast):.4f}'
    )


if __name__ == '__main__':
    main()
