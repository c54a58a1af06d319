"""Tokens per second of sampling: gptcourse's `generate` with and without the KV cache (lesson 21), with the
cache and lesson 22's decoding kernel (`use_decode_kernel`: a C matrix-vector product on a CPU), against
Hugging Face transformers' `generate` with and without its cache, on the same random GPT-2 weights; and each
against the floor (the bytes of weights a token reads over the speed at which this machine reads memory,
measured here).

    python bench/sample.py               # GPT-2 124M config, batch 1, 8-token prompt, 256 new tokens, greedy
    python bench/sample.py --small       # a small GPT-2-shaped config (quick)
    python bench/sample.py --new-tokens 50 --device cuda

A `GPT2LMHeadModel` with random weights is saved with `save_pretrained` to a temporary folder and loaded back
with `gptcourse.pretrained.from_pretrained`, so both libraries run identical weights; decoding is greedy, so
both must produce the same tokens (printed: match or the first position where they differ)."""

from __future__ import annotations
import argparse, os, platform, sys, tempfile, time

import torch


def _sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device, repeat: int):
    "Best wall time of `repeat` runs of `fn()` and its last result."
    best, out = float('inf'), None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        '--small', action='store_true', help='a small config (4 layers, 4 heads, 256 wide) instead of 124M'
    )
    ap.add_argument('--new-tokens', type=int, default=256, help='tokens to generate (default: 256)')
    ap.add_argument('--prompt-len', type=int, default=8, help='prompt length in tokens (default: 8)')
    ap.add_argument('--batch', type=int, default=1, help='batch size (default: 1)')
    ap.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    ap.add_argument(
        '--repeat',
        type=int,
        default=3,
        help='time the cached variants this many times (interleaved), keep the best (default: 3)',
    )
    ap.add_argument(
        '--repeat-uncached',
        type=int,
        default=1,
        help='the same for the (slow) cache-free variants (default: 1)',
    )
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    ap.add_argument('--skip-uncached', action='store_true', help='time only the cached variants')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    if min(args.new_tokens, args.prompt_len, args.batch, args.repeat, args.repeat_uncached) < 1:
        raise SystemExit(
            'bench/sample.py: --new-tokens, --prompt-len, --batch, --repeat and --repeat-uncached must be '
            '>= 1'
        )
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
    from gptcourse.pretrained import from_pretrained
    from gptcourse.train import generate
    from gptcourse.kv_cache import generate_cached
    from gptcourse.decode import DecodeLinear, bytes_per_token, gemv_kernel, read_gb_per_s, use_decode_kernel

    dims = dict(n_layer=4, n_head=4, n_embd=256) if args.small else dict(n_layer=12, n_head=12, n_embd=768)
    if args.prompt_len + args.new_tokens > 1024:
        raise SystemExit('bench/sample.py: --prompt-len + --new-tokens must be <= 1024 (the block size)')
    torch.manual_seed(args.seed)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **dims)).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = from_pretrained(folder)
    hf.to(args.device)
    ours.to(args.device).eval()
    hf.generation_config.eos_token_id = None  # never stop early: both produce exactly --new-tokens tokens
    hf.generation_config.pad_token_id = 50256

    g = torch.Generator().manual_seed(args.seed + 1)
    idx = torch.randint(0, 50257, (args.batch, args.prompt_len), generator=g).to(args.device)
    mask = torch.ones_like(idx)
    n = args.new_tokens

    use_decode_kernel(ours)  # lesson 22's DecodeLinear: max_rows 0 keeps nn.Linear's path, 8 takes the kernel
    kernel_rows = DecodeLinear.max_rows

    def ours_fn(cache, k=n, kernel=False):
        DecodeLinear.max_rows = kernel_rows if kernel else 0
        return (generate_cached if cache else generate)(ours, idx, k, temperature=0)

    def hf_fn(cache, k=n):
        with torch.inference_mode():
            return hf.generate(
                idx, attention_mask=mask, max_new_tokens=k, min_new_tokens=k, do_sample=False, use_cache=cache
            )

    print(f'# bench/sample.py {" ".join(sys.argv[1:] if argv is None else argv)}')
    print(
        f'device {args.device}'
        + (
            f' ({torch.cuda.get_device_name()})'
            if args.device.startswith('cuda')
            else f' ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
            f'{torch.get_num_threads()} torch threads)'
        )
    )
    print(
        f'python {platform.python_version()} | torch {torch.__version__} | '
        f'transformers {transformers.__version__}'
    )
    print(
        f'model {"small " if args.small else "124M "}{dims} '
        f'({sum(p.numel() for p in ours.parameters()):,} params), '
        f'batch {args.batch}, prompt {args.prompt_len} tokens, {n} new tokens, greedy, float32; '
        f'best of {args.repeat} (cached) / {args.repeat_uncached} (cache-free) interleaved runs'
    )
    print(f'machine load before: {" ".join(f"{x:.2f}" for x in os.getloadavg())} (1/5/15-min load average)')
    on_cpu = torch.device(args.device).type == 'cpu'
    if on_cpu:
        print(f'lesson 22\'s kernel: {gemv_kernel()[1]}')
        bw = read_gb_per_s()
        floor = bytes_per_token(ours) / (bw * 1e9)  # seconds per token at the memory's read speed
        print(
            f'floor: {bytes_per_token(ours) / 1e6:.0f} MB of weights per token / {bw:.1f} GB/s read '
            f'(a 256 MB sum on {torch.get_num_threads()} torch threads) = {floor * 1e3:.2f} ms per token, '
            f'{1 / floor:.1f} tokens/s (prompt not counted)'
        )

    for fn in (ours_fn, hf_fn):  # warm up: first calls allocate and pick kernels
        fn(True, 4)
        fn(False, 4)
    ours_kernel = lambda cache, k=n: ours_fn(cache, k, kernel=True)
    variants = [('ours, KV cache', ours_fn, True), ('transformers, cache', hf_fn, True)]
    if on_cpu:  # the kernel runs on a CPU only: elsewhere it would time nn.Linear's path twice
        ours_kernel(True, 4)
        variants.insert(1, ('ours, cache + kernel', ours_kernel, True))
    if not args.skip_uncached:
        variants += [('ours, no cache', ours_fn, False), ('transformers, no cache', hf_fn, False)]
    times, outs = {name: float('inf') for name, _, _ in variants}, {}
    for r in range(
        max(args.repeat, args.repeat_uncached)
    ):  # interleaved, so a burst of load hits every variant
        for name, fn, cache in variants:
            if r >= (args.repeat if cache else args.repeat_uncached):
                continue
            t, outs[name] = timed(lambda: fn(cache), args.device, 1)
            times[name] = min(times[name], t)
            print(f'  run {r + 1}: {name:30s} {t:8.3f} s', flush=True)
    for name, _, _ in variants:
        of_floor = f'  {n * floor / times[name]:5.1%} of the floor' if on_cpu and args.batch == 1 else ''
        print(f'{name:30s} {times[name]:8.3f} s  {args.batch * n / times[name]:8.1f} tokens/s{of_floor}')
    ref = outs['ours, KV cache'].cpu()
    for name, out in outs.items():
        if name == 'ours, KV cache':
            continue
        out = out.cpu()
        same = out.shape == ref.shape and torch.equal(out, ref)
        if same:
            where = ''
        elif out.shape != ref.shape:
            where = f' (shapes {tuple(out.shape)} vs {tuple(ref.shape)})'
        else:
            first = int((out[:, args.prompt_len :] != ref[:, args.prompt_len :]).any(0).nonzero()[0])
            where = f' (first difference at new token {first})'
        print(f'greedy tokens: ours (cache) vs {name}: {"identical" if same else "DIFFERENT"}{where}')
    t = times['ours, KV cache']
    print(
        'ratios (time / ours with KV cache): '
        + ', '.join(f'{k} {v / t:.2f}x' for k, v in times.items() if k != 'ours, KV cache')
    )
    best = 'ours, cache + kernel' if on_cpu else 'ours, KV cache'
    print(
        f'{best} vs transformers, cache: '
        f'{times["transformers, cache"] / times[best]:.2f}x the tokens per second'
    )
    print(f'machine load after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    return times


if __name__ == '__main__':
    main()
