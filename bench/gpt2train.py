"""Training throughput of gptcourse's GPT against transformers' GPT2LMHeadModel, in one run.

Both models get the same config (layers, heads, width, context, padded vocabulary, no dropout, tied
embeddings), the same batches, the same precision (float32 on CPU, bfloat16 autocast on CUDA, TF32 on), the
same loss (cross-entropy over all B·T positions) and the same optimizer (AdamW 0.9/0.95, eps 1e-8, weight
decay 0.1 on >=2-D tensors, fused on CUDA), with gradient clipping at 1.0. Rounds alternate between the two
models (so a noisy, shared machine slows both alike) and the median step time of each is reported, with
tokens/s, MFU (GPUs of known peak) and the ratio ours / transformers.

    python bench/gpt2train.py                       # CPU, a small GPT-2-shaped config (about a minute)
    python bench/gpt2train.py --preset gpu          # GPT-2 124M, B=16, T=1024, bf16 (CUDA)
    python bench/gpt2train.py --preset gpu --compile"""

import argparse, statistics, sys, time
import torch
import torch.nn.functional as F

from gptcourse.gpt2 import GPT, GPTConfig
from gptcourse.speed import device_policy, flops_per_token, mfu, peak_flops

PRESETS = {
    'cpu': dict(n_layer=2, n_head=4, n_embd=128, vocab_size=50304, B=4, T=128, rounds=5, steps=3, warmup=2),
    'gpu': dict(
        n_layer=12, n_head=12, n_embd=768, vocab_size=50304, B=16, T=1024, rounds=5, steps=10, warmup=5
    ),
}


def hf_model(cfg: GPTConfig):
    "transformers' GPT2LMHeadModel with the same sizes, no dropout, SDPA attention."
    from transformers import GPT2Config, GPT2LMHeadModel

    hc = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel._from_config(hc, attn_implementation='sdpa')


def adamw(model, lr, device_type):
    "AdamW as lesson 14's configure_adamw builds it: decay on >= 2-D tensors only, fused on CUDA."
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {'params': [p for p in params if p.dim() >= 2], 'weight_decay': 0.1},
        {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **({'fused': True} if device_type == 'cuda' else {})
    )


def make_step(model, opt, precision, x, y, hf: bool):
    "One training step (forward, loss over all positions, backward, clip, AdamW)."

    def step():
        with precision.autocast():
            logits = model(x).logits if hf else model(x)[0]
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        precision.scaler.step(opt)
        precision.scaler.update()
        return loss

    return step


def timed(step, n, device):
    "Seconds per step, averaged over `n` steps."
    if device == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step()
    loss.item()
    if device == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--preset', choices=list(PRESETS), default='cpu')
    ap.add_argument('--device', default=None, help='default: cuda for --preset gpu, else cpu')
    ap.add_argument(
        '--dtype',
        default='auto',
        help="Precision dtype: auto (bf16 on CUDA where supported, fp32 on CPU), float32, bfloat16, float16",
    )
    ap.add_argument('--compile', action='store_true', help='torch.compile both models')
    ap.add_argument('--batch-size', type=int, default=None)
    ap.add_argument('--seq-len', type=int, default=None)
    ap.add_argument('--rounds', type=int, default=None)
    ap.add_argument('--threads', type=int, default=None)
    args = ap.parse_args(argv)
    p = dict(PRESETS[args.preset])
    B, T = args.batch_size or p['B'], args.seq_len or p['T']
    device = args.device or ('cuda' if args.preset == 'gpu' else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        sys.exit('bench/gpt2train.py: --preset gpu needs CUDA')
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = device_policy(device, args.dtype, compile=args.compile)
    policy.set_tf32()
    precision = policy.precision()
    cfg = GPTConfig(
        block_size=T, vocab_size=p['vocab_size'], n_layer=p['n_layer'], n_head=p['n_head'], n_embd=p['n_embd']
    )

    torch.manual_seed(0)
    ours = GPT(cfg).to(device)
    theirs = hf_model(cfg).to(device).train()
    n_ours = ours.num_params()
    n_theirs = sum(p.numel() for p in theirs.parameters())  # parameters() lists the tied matrix once
    assert n_ours == n_theirs, (n_ours, n_theirs)
    x = torch.randint(0, 50257, (B, T), device=device)
    y = torch.randint(0, 50257, (B, T), device=device)
    models = {'gptcourse GPT': (ours, False), 'transformers GPT2LMHeadModel': (theirs, True)}
    steps = {}
    for name, (m, hf) in models.items():
        net = torch.compile(m) if args.compile else m
        steps[name] = make_step(net, adamw(m, 6e-4, torch.device(device).type), precision, x, y, hf)

    dev_name = torch.cuda.get_device_name() if device == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'device: {dev_name}; torch {torch.__version__}; precision {precision}; compile {args.compile}')
    print(
        f'config: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, vocab '
        f'{cfg.vocab_size}, B={B}, T={T} '
        f'({B * T:,} tokens/step); parameters: ours {n_ours:,}, transformers {n_theirs:,}'
    )
    for name, step in steps.items():
        for _ in range(p['warmup']):
            step()
    times = {name: [] for name in steps}
    for r in range(args.rounds or p['rounds']):
        for name, step in steps.items() if r % 2 == 0 else reversed(list(steps.items())):
            times[name].append(timed(step, p['steps'], device))
    peak = peak_flops() if device == 'cuda' else None
    tps = {}
    for name, ts in times.items():
        dt = statistics.median(ts)
        tps[name] = B * T / dt
        fpt = flops_per_token(cfg, ours.num_params(non_embedding=True), T)  # same model, same FLOPs
        u = mfu(tps[name], fpt, peak)
        print(
            f'{name:30s} {dt * 1e3:9.1f} ms/step  {tps[name]:12,.0f} tokens/s  '
            f'{tps[name] * fpt / 1e9:8.1f} GFLOP/s  '
            f'MFU '
            + (f'{u:.1%}' if u is not None else 'n/a (no known peak)')
            + f'  (median of {len(ts)} rounds of {p["steps"]} steps; min {min(ts) * 1e3:.1f} ms)'
        )
    a, b = tps.values()
    print(f'ratio ours / transformers (tokens/s): {a / b:.3f}')


if __name__ == '__main__':
    main()
