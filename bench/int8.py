"""Tokens per second of batch-1 decoding with int8 weights: lesson 30's `FusedGPT` (a token's whole forward
pass one call to C, over lesson 23's int8 blocks), lesson 23's `use_int8_kernel` (int8 weights, a float32
scale per 32, a C kernel; with `Int8DotLinear`, x rounded to int8 too and integer dot products) through the
model's modules, against Hugging Face transformers' cached `generate` in float32, against PyTorch's own int8
(`torch.ao.quantization.quantize_dynamic` applied to our model), and against lesson 22's float32 kernel; each
against its floor (the bytes of weights a token reads over the speed at which this machine reads memory,
measured here before and after).

    python bench/int8.py                  # GPT-2 124M shape, batch 1, 8-token prompt, 64 new tokens, greedy
    python bench/int8.py --small          # a small GPT-2-shaped config (quick)
    python bench/int8.py --rounds 7 --new-tokens 128

One torch thread unless --threads says otherwise. The variants run in interleaved rounds (a burst of load hits
every one of them); each line reports the median of the rounds and their spread. A `GPT2LMHeadModel` with
random weights is saved with `save_pretrained` and loaded back with `gptcourse.pretrained.from_pretrained`, so
both libraries run identical weights; float32 greedy tokens must match transformers' (printed), the int8 ones
are compared with float32's (random weights have near ties that rounding can flip: printed, not required)."""

from __future__ import annotations
import argparse, copy, os, platform, statistics, sys, tempfile, time, warnings

import torch

warnings.filterwarnings('ignore', message='.*(deprecated|quantize_per_tensor).*')  # torch.ao's notices


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--small', action='store_true', help='4 layers, 4 heads, 256 wide instead of GPT-2 124M')
    ap.add_argument('--new-tokens', type=int, default=64, help='tokens to generate (default: 64)')
    ap.add_argument('--prompt-len', type=int, default=8, help='prompt length in tokens (default: 8)')
    ap.add_argument(
        '--rounds', type=int, default=5, help='interleaved rounds; the median is kept (default: 5)'
    )
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (default: 1)')
    ap.add_argument('--group', type=int, default=32, help='weights per int8 scale (default: 32)')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    if min(args.new_tokens, args.prompt_len, args.rounds, args.threads) < 1:
        raise SystemExit('bench/int8.py: --new-tokens, --prompt-len, --rounds and --threads must be >= 1')
    if args.prompt_len + args.new_tokens > 1024:
        raise SystemExit('bench/int8.py: --prompt-len + --new-tokens must be <= 1024 (the block size)')
    torch.set_num_threads(args.threads)

    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
    from gptcourse.pretrained import from_pretrained
    from gptcourse.kv_cache import generate_cached
    from gptcourse.decode import bytes_per_token, gemv_kernel, read_gb_per_s, use_decode_kernel
    from gptcourse.quantize import Int8DotLinear, int8_bytes_per_token, q8_kernel, q8dot_kernel
    from gptcourse.quantize import use_int8_kernel
    from gptcourse.fused import FusedGPT, fused_kernel

    dims = dict(n_layer=4, n_head=4, n_embd=256) if args.small else dict(n_layer=12, n_head=12, n_embd=768)
    torch.manual_seed(args.seed)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **dims)).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = from_pretrained(folder).eval()
    hf.generation_config.eos_token_id = (
        None  # never stop early: every variant makes exactly --new-tokens tokens
    )
    hf.generation_config.pad_token_id = 50256
    dynamic = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(ours), {torch.nn.Linear}, dtype=torch.qint8
    )
    ours_int8 = use_int8_kernel(copy.deepcopy(ours), args.group)
    ours_dot = use_int8_kernel(copy.deepcopy(ours), args.group, Int8DotLinear)
    ours_fused = FusedGPT(ours_dot)  # the same int8 model, a token one call to C
    use_decode_kernel(ours)  # lesson 22's float32 kernel

    g = torch.Generator().manual_seed(args.seed + 1)
    idx = torch.randint(0, 50257, (1, args.prompt_len), generator=g)
    n = args.new_tokens

    def hf_fn(k=n):
        with torch.inference_mode():
            return hf.generate(
                idx, attention_mask=torch.ones_like(idx), max_new_tokens=k, min_new_tokens=k, do_sample=False
            )

    variants = {
        'ours, int8, in C (lesson 30)': lambda k=n: generate_cached(ours_fused, idx, k, temperature=0),
        'ours, int8 x int8 (lesson 23)': lambda k=n: generate_cached(ours_dot, idx, k, temperature=0),
        'ours, int8 (lesson 23)': lambda k=n: generate_cached(ours_int8, idx, k, temperature=0),
        'transformers, fp32, cache': hf_fn,
        'quantize_dynamic int8 (ours)': lambda k=n: generate_cached(dynamic, idx, k, temperature=0),
        'ours, fp32 (lesson 22)': lambda k=n: generate_cached(ours, idx, k, temperature=0),
    }

    print(f'# bench/int8.py {" ".join(sys.argv[1:] if argv is None else argv)}')
    print(
        f'device cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'{torch.get_num_threads()} torch threads)'
    )
    print(
        f'python {platform.python_version()} | torch {torch.__version__} | '
        f'transformers {transformers.__version__} | quantized engine {torch.backends.quantized.engine}'
    )
    print(
        f'model {"small " if args.small else "124M "}{dims}, batch 1, prompt {args.prompt_len} tokens, '
        f'{n} new tokens, greedy; int8: a float32 scale per {args.group} weights; '
        f'median of {args.rounds} interleaved rounds'
    )
    print(f"lesson 22's kernel: {gemv_kernel()[1]}")
    print(f"lesson 23's kernels: {q8_kernel()[1]}; {q8dot_kernel()[1]}")
    print(f"lesson 30's kernel: {fused_kernel()[1]}")
    load_before, bw_before = os.getloadavg(), read_gb_per_s()
    print(f'machine load before: {" ".join(f"{x:.2f}" for x in load_before)} (1/5/15-min load average)')

    for fn in variants.values():  # warm up: first calls allocate, compile and pick kernels
        fn(4)
    times = {name: [] for name in variants}
    outs = {}
    for r in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
        print(f'  round {r + 1}: ' + ', '.join(f'{k} {v[-1]:.3f} s' for k, v in times.items()), flush=True)
    bw = max(bw_before, read_gb_per_s())  # the faster reading: the stricter floor
    floors = {  # seconds per token at the memory's read speed
        'fp32': bytes_per_token(ours) / (bw * 1e9),
        'int8': int8_bytes_per_token(ours_int8) / (bw * 1e9),
    }
    print(
        f'memory read speed {bw:.1f} GB/s (a 256 MB sum, one thread; before {bw_before:.1f}); floors: fp32 '
        f'{bytes_per_token(ours) / 1e6:.0f} MB a token = {1 / floors["fp32"]:.1f} tokens/s, int8 '
        f'{int8_bytes_per_token(ours_int8) / 1e6:.0f} MB a token = {1 / floors["int8"]:.1f} tokens/s'
    )
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        floor = floors['int8' if 'int8' in name else 'fp32']
        print(
            f'{name:30s} {med[name]:7.3f} s (rounds {min(ts):.3f}-{max(ts):.3f})  '
            f'{n / med[name]:7.1f} tokens/s  {n * floor / med[name]:6.1%} of its floor'
        )
    ref = outs['ours, fp32 (lesson 22)'][0, args.prompt_len :]
    for name, out in outs.items():
        if name != 'ours, fp32 (lesson 22)':
            same = (out[0, args.prompt_len :] == ref).float().mean()
            print(f'greedy tokens: {name} vs ours, fp32: {same:.0%} identical')
    int8 = med['ours, int8, in C (lesson 30)']
    load_after = os.getloadavg()
    print(
        f'ours int8 in C vs transformers fp32 (cache): {med["transformers, fp32, cache"] / int8:.2f}x; '
        f'vs quantize_dynamic int8: {med["quantize_dynamic int8 (ours)"] / int8:.2f}x; '
        f'vs ours fp32: {med["ours, fp32 (lesson 22)"] / int8:.2f}x; '
        f'vs the same int8 model through its modules: {med["ours, int8 x int8 (lesson 23)"] / int8:.2f}x; '
        f'{n * floors["int8"] / int8:.0%} of the int8 floor; '
        f'load {load_before[0]:.2f} -> {load_after[0]:.2f}, read {bw:.1f} GB/s'
    )
    print(f'machine load after: {" ".join(f"{x:.2f}" for x in load_after)}')
    return med


if __name__ == '__main__':
    main()
