"""The lessons' diagrams, drawn by code so that they can be made again and reviewed in a diff.

    python nbs/figures/make.py            # writes nbs/figures/*.svg
    python nbs/figures/make.py --out DIR

Each figure is an SVG with its text kept as text (`svg.fonttype = 'none'`), no date and a fixed id salt, so the same
matplotlib writes the same bytes. A lesson's markdown shows it with `![alt text](figures/NAME.svg)`.
"""
from __future__ import annotations
import argparse
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

HERE = Path(__file__).resolve().parent
plt.rcParams.update({'svg.fonttype': 'none', 'svg.hashsalt': 'gptcourse', 'font.family': 'DejaVu Sans',
                     'font.size': 10})
BLUE, ORANGE, GREEN, GREY, INK = '#dbe8f5', '#fbd9a6', '#d5ecd4', '#eeeeee', '#222222'


def canvas(w: float, h: float):
    fig = plt.figure(figsize=(w, h))
    ax = fig.add_axes([0, 0, 1, 1]); ax.set_xlim(0, w); ax.set_ylim(0, h); ax.axis('off')
    return fig, ax


def box(ax, x, y, w, h, text, color=BLUE, size=10, weight='normal'):
    "A rounded box with centred text; (x, y) is its lower-left corner."
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.02,rounding_size=0.08', fc=color, ec=INK, lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', size=size, weight=weight, color=INK)


def arrow(ax, a, b, **kw):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle='-|>', mutation_scale=12, color=INK, lw=1.2, **kw))


def block_residual(path: Path):
    "Lesson 06: a pre-norm block; the residual stream runs straight through, each branch adds to it."
    fig, ax = canvas(7.4, 6.0)
    sx = 1.3                                                        # the residual stream
    ax.plot([sx, sx], [0.55, 5.45], color='#7a9cc6', lw=6, solid_capstyle='butt', zorder=0)
    ax.text(sx - 0.25, 3.0, 'residual stream  (B, T, C)', rotation=90, ha='center', va='center', size=9,
            color='#45648c')
    box(ax, sx - 0.55, 0.05, 1.1, 0.5, 'x', GREY); box(ax, sx - 0.55, 5.45, 1.1, 0.5, 'x out', GREY)
    for y0, norm, name, what, detail, formula in (
            (0.9, 'ln1: LayerNorm', 'sa: multi-head attention', 'communication: tokens look at earlier tokens',
             'n_head heads of C / n_head, concatenated, projected', 'x = x + sa(ln1(x))'),
            (3.1, 'ln2: LayerNorm', 'ffwd: feed-forward', 'computation: each position on its own',
             'Linear(C, 4C) → ReLU → Linear(4C, C)', 'x = x + ffwd(ln2(x))')):
        arrow(ax, (sx, y0 + 0.1), (2.3, y0 + 0.45), connectionstyle='arc3,rad=-0.2')
        box(ax, 2.3, y0 + 0.2, 2.2, 0.5, norm, GREEN)
        arrow(ax, (3.4, y0 + 0.7), (3.4, y0 + 0.95))
        box(ax, 2.3, y0 + 0.95, 2.2, 0.55, name, ORANGE)
        ax.text(4.65, y0 + 1.22, what.replace(': ', ':\n'), size=8.5, va='center', color='#555555')
        ax.text(3.4, y0 + 1.62, detail, size=7.5, ha='center', va='bottom', color='#555555')
        ax.add_patch(plt.Circle((sx, y0 + 1.95), 0.17, fc='white', ec=INK, lw=1.2, zorder=3))
        ax.text(sx, y0 + 1.95, '+', ha='center', va='center', size=13, zorder=4)
        arrow(ax, (2.3, y0 + 1.22), (sx + 0.17, y0 + 1.9), connectionstyle='arc3,rad=-0.2')
        ax.text(sx + 0.3, y0 + 2.12, formula, size=9, family='DejaVu Sans Mono', va='bottom')
    fig.savefig(path, metadata={'Date': None}); plt.close(fig)


def gpt2_modules(path: Path):
    "Lesson 08: GPT-2 124M by Hugging Face's names, with the shapes its weights carry; four are stored transposed."
    rows = [('transformer.wte', 'token embedding', '(50257, 768)', None),
            ('transformer.wpe', 'position embedding', '(1024, 768)', None),
            ('h.i.ln_1', 'LayerNorm', '(768,)', None),
            ('h.i.attn.c_attn', 'q, k, v in one Linear', '(768, 2304)', '(2304, 768)'),
            ('h.i.attn.c_proj', 'attention output', '(768, 768)', '(768, 768)'),
            ('h.i.ln_2', 'LayerNorm', '(768,)', None),
            ('h.i.mlp.c_fc', 'MLP up, then GELU', '(768, 3072)', '(3072, 768)'),
            ('h.i.mlp.c_proj', 'MLP down', '(3072, 768)', '(768, 3072)'),
            ('transformer.ln_f', 'final LayerNorm', '(768,)', None),
            ('lm_head', 'logits: tied to wte', '(50257, 768)', None)]
    fig, ax = canvas(7.6, 5.9)
    for x, head in ((0.2, 'Hugging Face name'), (2.55, 'what it is'), (4.55, 'its weight'), (6.05, 'in nn.Linear')):
        ax.text(x, 5.55, head, weight='bold', size=9.5)
    y = 5.05
    for name, what, hf, ours in rows:
        color = ORANGE if ours else (GREY if 'ln' in name else BLUE)
        box(ax, 0.15, y, 2.25, 0.36, name, color, size=8.5)
        ax.text(2.55, y + 0.18, what, va='center', size=8.5)
        ax.text(4.55, y + 0.18, hf, va='center', size=8.5, family='DejaVu Sans Mono')
        if ours: ax.text(6.05, y + 0.18, f'{ours}  .T', va='center', size=8.5, family='DejaVu Sans Mono',
                         color='#9a4b00')
        y -= 0.45 if name not in ('transformer.wpe', 'h.i.mlp.c_proj') else 0.62
    ax.add_patch(Rectangle((0.08, 1.65), 7.45, 2.8, fill=False, ls='--', ec='#7a9cc6', lw=1))
    ax.text(7.45, 4.12, 'h.0 … h.11: 12 blocks', ha='right', size=8.5, color='#45648c')
    ax.text(0.15, 0.12, "Orange: OpenAI's Conv1D stores (in, out); nn.Linear wants (out, in), so these four are\n"
            'transposed when the weights are loaded. Square c_proj too: its shape alone would not tell.',
            size=8.5, color='#555555')
    fig.savefig(path, metadata={'Date': None}); plt.close(fig)


def ddp_timeline(path: Path, world: int = 4, micro: int = 3):
    "Lesson 13: ranks run their micro-steps side by side; only the last backward all-reduces; then one step."
    fig, ax = canvas(8.2, 3.9)
    w, x0 = 1.45, 0.9
    for r in range(world):
        y = 3.0 - r * 0.62
        ax.text(0.1, y + 0.22, f'rank {r}', va='center', size=9.5, weight='bold')
        for m in range(micro):
            last = m == micro - 1
            box(ax, x0 + m * (w + 0.12), y, w, 0.44, f'batch {m * world + r}: fwd, bwd', ORANGE if last else BLUE,
                size=8)
        box(ax, x0 + micro * (w + 0.12) + 1.05, y, 1.05, 0.44, 'optimizer', GREEN, size=8.5)
    xa = x0 + (micro - 1) * (w + 0.12) + w + 0.08
    ax.add_patch(Rectangle((xa, 3.0 - (world - 1) * 0.62 - 0.05), 0.9, (world - 1) * 0.62 + 0.54, fc='#f6e6c8',
                           ec='#c98a2b', lw=1))
    ax.text(xa + 0.45, 1.55 + 0.6, 'all-reduce:\nmean of\ngradients', ha='center', va='center', size=8)
    ax.text(x0, 0.55, f'inside model.no_sync(): no communication (blue); the last backward averages the gradients of '
            f'all {world} ranks\n(orange), so every rank takes the same step. Rank r reads batch m·{world} + r: '
            f'together the ranks read {world * micro} consecutive batches,\nexactly what one process would read in '
            f'{world * micro} micro-steps of accumulation.', size=8, color='#555555', va='center')
    fig.savefig(path, metadata={'Date': None}); plt.close(fig)


def kv_cache_cases(path: Path, max_len: int = 8):
    "Lesson 17: which cached keys each new query sees, in the three cases `attend` handles."
    cases = [('prefill: 3 tokens, nothing cached\nis_causal=True', 0, 3),
             ('one new token after 5 cached\nno mask: it sees every key', 5, 1),
             ('3 new tokens after 5 cached\nexplicit mask: query i sees keys ≤ 5 + i', 5, 3)]
    fig, ax = canvas(9.0, 2.55)
    c = 0.28
    for k, (title, length, t) in enumerate(cases):
        x0, y0 = 0.35 + k * 3.0, 1.55
        ax.text(x0, y0 + 0.55, title, size=8.5, va='bottom')
        for j in range(max_len):
            ax.text(x0 + j * c + c / 2, y0 + 0.38, str(j), ha='center', size=7, color='#555555')
        for i in range(t):
            for j in range(max_len):
                sees, filled = j <= length + i, j < length + t
                fc = ORANGE if sees and j >= length else (BLUE if sees else (GREY if filled else 'white'))
                ax.add_patch(Rectangle((x0 + j * c, y0 - i * c), c, c, fc=fc, ec='#999999', lw=0.6))
            ax.text(x0 - 0.08, y0 - i * c + c / 2, f'q{i}', ha='right', va='center', size=7)
    ax.text(0.35, 0.35, 'columns: key slots 0-7 of the cache (max_len 8); rows: the new queries.  Blue: a cached key '
            'it sees;\norange: a new key it sees; grey: a key it must not see yet; white: an empty slot. In the third '
            'case is_causal=True\nwould draw the triangle from the top-left corner: q0 would see key 0 alone, not keys '
            '0-5.', size=8, color='#555555', va='center')
    fig.savefig(path, metadata={'Date': None}); plt.close(fig)


FIGURES = {'block_residual.svg': block_residual, 'gpt2_modules.svg': gpt2_modules, 'ddp_timeline.svg': ddp_timeline,
           'kv_cache_cases.svg': kv_cache_cases}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(HERE), help='the folder for the SVGs (default: nbs/figures)')
    out = Path(ap.parse_args(argv).out); out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(out / name); print(f'wrote {out / name}')


if __name__ == '__main__':
    main()
