"""The lessons' diagrams, drawn by code so that they can be made again and reviewed in a diff.

    python nbs/figures/make.py            # writes nbs/figures/*.svg, and attaches each to the lessons
    that show it python nbs/figures/make.py --out DIR  # only draws, into DIR

Each figure is an SVG with its text kept as text (`svg.fonttype = 'none'`), no date and a fixed id salt, so
the same matplotlib writes the same bytes. The SVG is the figure's source, and what the website shows.

A notebook shows it from a cell attachment, `![alt text](attachment:NAME.png)`: a PNG of the same drawing
carried inside the markdown cell, so that a notebook opened alone (Colab opens one from GitHub without the
repository's other files) shows its diagrams, as Jupyter and GitHub do; PNG because every notebook viewer
renders a PNG attachment. Each PNG names the sha256 of the SVG it was drawn with (its `Source` text), so
tests/test_figures.py can tell an attachment that is not the committed SVG's drawing. `attach` puts them in
the cells that show a figure (written `![alt](figures/NAME.svg)` or as an attachment already)."""

from __future__ import annotations
import argparse, base64, hashlib, io, json, re, sys, tempfile
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

HERE = Path(__file__).resolve().parent
plt.rcParams.update(
    {'svg.fonttype': 'none', 'svg.hashsalt': 'gptcourse', 'font.family': 'DejaVu Sans', 'font.size': 10}
)
BLUE, ORANGE, GREEN, GREY, INK = '#dbe8f5', '#fbd9a6', '#d5ecd4', '#eeeeee', '#222222'


PNGS: dict[str, bytes] = {}  # the PNG of each figure drawn by this process, by its SVG's name


def save(fig, path: Path):
    "The figure as an SVG at `path`, and as a PNG in `PNGS` whose `Source` text is the SVG's sha256."
    fig.savefig(path, metadata={'Date': None})
    png = io.BytesIO()
    fig.savefig(
        png,
        format='png',
        dpi=100,
        metadata={'Software': None, 'Source': hashlib.sha256(Path(path).read_bytes()).hexdigest()},
    )
    PNGS[Path(path).name] = png.getvalue()
    plt.close(fig)


def canvas(w: float, h: float):
    fig = plt.figure(figsize=(w, h))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.axis('off')
    return fig, ax


def box(ax, x, y, w, h, text, color=BLUE, size=10, weight='normal'):
    "A rounded box with centred text; (x, y) is its lower-left corner."
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.02,rounding_size=0.08', fc=color, ec=INK, lw=1)
    )
    ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', size=size, weight=weight, color=INK)


def arrow(ax, a, b, **kw):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle='-|>', mutation_scale=12, color=INK, lw=1.2, **kw))


def block_residual(path: Path):
    "Lesson 06: a pre-norm block; the residual stream runs straight through, each branch adds to it."
    fig, ax = canvas(7.4, 6.0)
    sx = 1.3  # the residual stream
    ax.plot([sx, sx], [0.55, 5.45], color='#7a9cc6', lw=6, solid_capstyle='butt', zorder=0)
    ax.text(
        sx - 0.25,
        3.0,
        'residual stream  (B, T, C)',
        rotation=90,
        ha='center',
        va='center',
        size=9,
        color='#45648c',
    )
    box(ax, sx - 0.55, 0.05, 1.1, 0.5, 'x', GREY)
    box(ax, sx - 0.55, 5.45, 1.1, 0.5, 'x out', GREY)
    for y0, norm, name, what, detail, formula in (
        (
            0.9,
            'ln1: LayerNorm',
            'sa: multi-head attention',
            'communication: tokens look at earlier tokens',
            'n_head heads of C / n_head, concatenated, projected',
            'x = x + sa(ln1(x))',
        ),
        (
            3.1,
            'ln2: LayerNorm',
            'ffwd: feed-forward',
            'computation: each position on its own',
            'Linear(C, 4C) → ReLU → Linear(4C, C)',
            'x = x + ffwd(ln2(x))',
        ),
    ):
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
    save(fig, path)


def gpt2_modules(path: Path):
    """Lesson 08: GPT-2 124M by Hugging Face's names, with the shapes its weights carry; four are stored
    transposed."""
    rows = [
        ('transformer.wte', 'token embedding', '(50257, 768)', None),
        ('transformer.wpe', 'position embedding', '(1024, 768)', None),
        ('h.i.ln_1', 'LayerNorm', '(768,)', None),
        ('h.i.attn.c_attn', 'q, k, v in one Linear', '(768, 2304)', '(2304, 768)'),
        ('h.i.attn.c_proj', 'attention output', '(768, 768)', '(768, 768)'),
        ('h.i.ln_2', 'LayerNorm', '(768,)', None),
        ('h.i.mlp.c_fc', 'MLP up, then GELU', '(768, 3072)', '(3072, 768)'),
        ('h.i.mlp.c_proj', 'MLP down', '(3072, 768)', '(768, 3072)'),
        ('transformer.ln_f', 'final LayerNorm', '(768,)', None),
        ('lm_head', 'logits: tied to wte', '(50257, 768)', None),
    ]
    fig, ax = canvas(7.6, 5.9)
    for x, head in (
        (0.2, 'Hugging Face name'),
        (2.55, 'what it is'),
        (4.55, 'its weight'),
        (6.05, 'in nn.Linear'),
    ):
        ax.text(x, 5.55, head, weight='bold', size=9.5)
    y = 5.05
    for name, what, hf, ours in rows:
        color = ORANGE if ours else (GREY if 'ln' in name else BLUE)
        box(ax, 0.15, y, 2.25, 0.36, name, color, size=8.5)
        ax.text(2.55, y + 0.18, what, va='center', size=8.5)
        ax.text(4.55, y + 0.18, hf, va='center', size=8.5, family='DejaVu Sans Mono')
        if ours:
            ax.text(
                6.05,
                y + 0.18,
                f'{ours}  .T',
                va='center',
                size=8.5,
                family='DejaVu Sans Mono',
                color='#9a4b00',
            )
        y -= 0.45 if name not in ('transformer.wpe', 'h.i.mlp.c_proj') else 0.62
    ax.add_patch(Rectangle((0.08, 1.65), 7.45, 2.8, fill=False, ls='--', ec='#7a9cc6', lw=1))
    ax.text(7.45, 4.12, 'h.0 … h.11: 12 blocks', ha='right', size=8.5, color='#45648c')
    ax.text(
        0.15,
        0.12,
        "Orange: OpenAI's Conv1D stores (in, out); nn.Linear wants (out, in), so these four are\n"
        'transposed when the weights are loaded. Square c_proj too: its shape alone would not tell.',
        size=8.5,
        color='#555555',
    )
    save(fig, path)


def ddp_timeline(path: Path, world: int = 4, micro: int = 3):
    "Lesson 15: ranks run their micro-steps side by side; only the last backward all-reduces; then one step."
    fig, ax = canvas(8.2, 3.9)
    w, x0 = 1.45, 0.9
    for r in range(world):
        y = 3.0 - r * 0.62
        ax.text(0.1, y + 0.22, f'rank {r}', va='center', size=9.5, weight='bold')
        for m in range(micro):
            last = m == micro - 1
            box(
                ax,
                x0 + m * (w + 0.12),
                y,
                w,
                0.44,
                f'batch {m * world + r}: fwd, bwd',
                ORANGE if last else BLUE,
                size=8,
            )
        box(ax, x0 + micro * (w + 0.12) + 1.05, y, 1.05, 0.44, 'optimizer', GREEN, size=8.5)
    xa = x0 + (micro - 1) * (w + 0.12) + w + 0.08
    ax.add_patch(
        Rectangle(
            (xa, 3.0 - (world - 1) * 0.62 - 0.05),
            0.9,
            (world - 1) * 0.62 + 0.54,
            fc='#f6e6c8',
            ec='#c98a2b',
            lw=1,
        )
    )
    ax.text(xa + 0.45, 1.55 + 0.6, 'all-reduce:\nmean of\ngradients', ha='center', va='center', size=8)
    ax.text(
        x0,
        0.55,
        f'inside model.no_sync(): no communication (blue); the last backward averages the gradients of '
        f'all {world} ranks\n(orange), so every rank takes the same step. Rank r reads batch m·{world} + r: '
        f'together the ranks read {world * micro} consecutive batches,\nexactly what one '
        f'process would read in '
        f'{world * micro} micro-steps of accumulation.',
        size=8,
        color='#555555',
        va='center',
    )
    save(fig, path)


def kv_cache_cases(path: Path, max_len: int = 8):
    "Lesson 21: which cached keys each new query sees, in the three cases `attend` handles."
    cases = [
        ('prefill: 3 tokens, nothing cached\nis_causal=True', 0, 3),
        ('one new token after 5 cached\nno mask: it sees every key', 5, 1),
        ('3 new tokens after 5 cached\nexplicit mask: query i sees keys ≤ 5 + i', 5, 3),
    ]
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
    ax.text(
        0.35,
        0.35,
        'columns: key slots 0-7 of the cache (max_len 8); rows: the new queries.  Blue: a cached key '
        'it sees;\norange: a new key it sees; grey: a key it must not see yet; white: an empty '
        'slot. In the third '
        'case is_causal=True\nwould draw the triangle from the top-left corner: q0 would see key 0 '
        'alone, not keys '
        '0-5.',
        size=8,
        color='#555555',
        va='center',
    )
    save(fig, path)


def causal_weights(path: Path, T: int = 4):
    "Lesson 03: affinities, the future masked to -inf, a softmax per row: the averaging weights."
    fig, ax = canvas(8.6, 2.9)
    c = 0.42
    panels = [
        ('affinities: all 0', lambda i, j: '0'),
        ('mask the future: j > i  to  -inf', lambda i, j: '0' if j <= i else '-inf'),
        ('softmax of each row: the weights', lambda i, j: (f'1/{i + 1}' if i else '1') if j <= i else '0'),
    ]
    for k, (title, cell) in enumerate(panels):
        x0, y0 = 0.55 + k * 2.85, 2.05
        ax.text(x0, y0 + 0.55, title, size=8.5)
        for i in range(T):
            ax.text(x0 - 0.08, y0 - i * c + c / 2, f't={i}', ha='right', va='center', size=7.5)
            for j in range(T):
                text = cell(i, j)
                fc = GREY if text == '-inf' or (k == 2 and text == '0') else (ORANGE if k == 2 else BLUE)
                ax.add_patch(Rectangle((x0 + j * c, y0 - i * c), c, c, fc=fc, ec='#999999', lw=0.6))
                ax.text(x0 + j * c + c / 2, y0 - i * c + c / 2, text, ha='center', va='center', size=7.5)
        if k < 2:
            arrow(ax, (x0 + T * c + 0.1, y0 - 0.6), (x0 + 2.85 - 0.35, y0 - 0.6))
    ax.text(
        0.55,
        0.12,
        'Row t holds the weights token t gives to tokens 0..t: an average of its past, never its '
        'future. Lesson 04 replaces\nthe zeros with learned affinities q·k; the mask and the softmax stay.',
        size=8,
        color='#555555',
    )
    save(fig, path)


def qkv_shapes(path: Path):
    "Lesson 04: one head of self-attention with the shapes of every tensor."
    fig, ax = canvas(8.4, 3.6)
    box(ax, 0.2, 1.5, 1.3, 0.6, 'x\n(B, T, C)', GREY)
    for k, (name, y) in enumerate((('query', 2.75), ('key', 1.55), ('value', 0.35))):
        box(ax, 2.0, y, 1.7, 0.55, f'{name}: Linear(C, hs)', GREEN, size=8.5)
        arrow(ax, (1.5, 1.8), (2.0, y + 0.27))
        box(ax, 4.1, y, 1.0, 0.55, f'{name[0]}  (B, T, hs)', BLUE, size=8.5)
        arrow(ax, (3.7, y + 0.27), (4.1, y + 0.27))
    box(
        ax,
        5.5,
        2.1,
        2.7,
        0.75,
        'wei = q @ kᵀ · hs^-0.5  (B, T, T)\nmask the future, softmax',
        ORANGE,
        size=8.5,
    )
    arrow(ax, (5.1, 3.02), (5.5, 2.6))
    arrow(ax, (5.1, 1.82), (5.5, 2.3))
    box(ax, 5.5, 0.35, 2.7, 0.55, 'out = wei @ v   (B, T, hs)', ORANGE, size=8.5)
    arrow(ax, (6.85, 2.1), (6.85, 0.9))
    arrow(ax, (5.1, 0.62), (5.5, 0.62))
    ax.text(0.2, 3.35, 'B sequences, T tokens, C channels; hs = head size', size=8.5, color='#555555')
    save(fig, path)


def heads(path: Path, n_head: int = 4):
    "Lesson 05: heads side by side, each of C / n_head channels, concatenated and projected."
    fig, ax = canvas(8.0, 2.9)
    box(ax, 0.2, 1.15, 1.2, 0.6, 'x\n(B, T, C)', GREY)
    for h in range(n_head):
        y = 2.25 - h * 0.62
        box(ax, 2.0, y, 2.1, 0.48, f'head {h}: (B, T, C/{n_head})', BLUE, size=8.5)
        arrow(ax, (1.4, 1.45), (2.0, y + 0.24))
        arrow(ax, (4.1, y + 0.24), (4.6, 1.45))
    box(ax, 4.6, 1.05, 1.45, 0.8, 'concatenate\n(B, T, C)', GREEN, size=8.5)
    box(ax, 6.45, 1.05, 1.4, 0.8, 'proj:\nLinear(C, C)', ORANGE, size=8.5)
    arrow(ax, (6.05, 1.45), (6.45, 1.45))
    ax.text(
        0.2,
        0.12,
        f'{n_head} heads, each with its own query, key and value, attend independently; the same '
        'cost as one head of size C.',
        size=8,
        color='#555555',
    )
    save(fig, path)


def chargpt(path: Path):
    "Lesson 07: the character-level GPT end to end, with the lecture's sizes."
    fig, ax = canvas(9.4, 2.4)
    steps = [
        ('idx\n(B, T)', GREY),
        ('token emb (65, C)\n+ position emb (256, C)', BLUE),
        ('6 × Block\n(B, T, C)', ORANGE),
        ('ln_f\nLayerNorm(C)', GREEN),
        ('lm_head\nLinear(C, 65)', BLUE),
        ('logits\n(B, T, 65)', GREY),
    ]
    x = 0.15
    for k, (text, color) in enumerate(steps):
        w = 1.85 if k == 1 else 1.2
        box(ax, x, 1.1, w, 0.75, text, color, size=8.5)
        if k:
            arrow(ax, (x - 0.25, 1.47), (x, 1.47))
        x += w + 0.25
    ax.text(
        0.15,
        0.35,
        "The lecture's model: C = 384, 6 heads, T = 256, 10.8M parameters. Training compares the "
        'logits with the next\ncharacters (cross-entropy); sampling takes the last position\'s '
        'logits, draws a '
        'character and appends it.',
        size=8,
        color='#555555',
    )
    save(fig, path)


def lr_schedule(path: Path, max_lr: float = 6e-4, warmup: int = 715, steps: int = 19073):
    "Lesson 14: the schedule's three phases, from the formula."
    import math

    fig = plt.figure(figsize=(7.6, 3.0))
    ax = fig.add_axes([0.12, 0.17, 0.84, 0.72])
    min_lr = 0.1 * max_lr
    xs = range(0, steps + 2001, 25)
    lr = [
        max_lr * (t + 1) / warmup
        if t < warmup
        else min_lr
        if t >= steps
        else min_lr + 0.5 * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup))) * (max_lr - min_lr)
        for t in xs
    ]
    ax.plot(list(xs), lr, color='#2b5b84', lw=2)
    for a, b, label, color in (
        (0, warmup, 'warm-up', ORANGE),
        (warmup, steps, 'cosine decay', BLUE),
        (steps, steps + 2000, 'held at 10%', GREY),
    ):
        ax.axvspan(a, b, color=color, alpha=0.6, lw=0)
        ax.text(
            b + 150 if a == 0 else (a + b) / 2,
            max_lr * 1.08,
            label,
            ha='left' if a == 0 else 'center',
            size=8.5,
        )
    ax.set_xlim(0, steps + 2000)
    ax.set_ylim(0, max_lr * 1.18)
    ax.set_xlabel('step')
    ax.set_ylabel('learning rate')
    ax.set_title("the lecture's schedule: max 6e-4, 715 warm-up steps, 19,073 steps, min 6e-5", size=9)
    save(fig, path)


def bpe_tree(path: Path, word: str = ' Shakespeare'):
    "Lesson 25: how GPT-2's merges, lowest rank first, build one word out of its bytes."
    sys.path.insert(0, str(HERE.parent.parent))
    from gptcourse.pretrained import gpt2_tokenizer

    ranks = gpt2_tokenizer()._mergeable_ranks
    nodes = [dict(text=bytes([b]), x=float(i), depth=0) for i, b in enumerate(word.encode())]
    parts = list(range(len(nodes)))
    while len(parts) > 1:
        pairs = [
            (ranks.get(nodes[a]['text'] + nodes[b]['text']), i)
            for i, (a, b) in enumerate(zip(parts, parts[1:]))
        ]
        rank, i = min((r, i) for r, i in pairs if r is not None)
        a, b = parts[i], parts[i + 1]
        nodes.append(
            dict(
                text=nodes[a]['text'] + nodes[b]['text'],
                x=(nodes[a]['x'] + nodes[b]['x']) / 2,
                depth=max(nodes[a]['depth'], nodes[b]['depth']) + 1,
                kids=(a, b),
                rank=rank,
            )
        )
        parts[i : i + 2] = [len(nodes) - 1]
    top = max(n['depth'] for n in nodes)
    fig, ax = canvas(8.6, 0.75 * top + 1.6)
    sx, sy = 0.72, 0.75
    pos = lambda n: (0.45 + n['x'] * sx, 0.9 + n['depth'] * sy)
    for n in nodes:
        for k in n.get('kids', ()):
            (x1, y1), (x2, y2) = pos(n), pos(nodes[k])
            ax.plot([x1, x2], [y1 - 0.16, y2 + 0.16], color='#999999', lw=1)
    for n in nodes:
        x, y = pos(n)
        label = n['text'].decode().replace(' ', '␣')
        w = 0.16 + 0.075 * len(label)
        box(ax, x - w / 2, y - 0.16, w, 0.32, label, ORANGE if 'kids' in n else GREY, size=8)
        if 'kids' in n:
            ax.text(x + w / 2 + 0.04, y, str(n['rank']), va='center', size=7, color='#9a4b00')
    ax.text(
        0.45,
        0.25,
        f'"{word}" is one GPT-2 token: its {len(word.encode())} bytes (bottom) merged pair by pair, '
        'lowest rank first;\nthe orange number is the new token\'s id, 256 + the merge\'s line in '
        'vocab.bpe: lower '
        'numbers merge first.',
        size=8,
        color='#555555',
    )
    save(fig, path)


FIGURES = {
    'causal_weights.svg': causal_weights,
    'qkv_shapes.svg': qkv_shapes,
    'heads.svg': heads,
    'block_residual.svg': block_residual,
    'chargpt.svg': chargpt,
    'gpt2_modules.svg': gpt2_modules,
    'lr_schedule.svg': lr_schedule,
    'ddp_timeline.svg': ddp_timeline,
    'kv_cache_cases.svg': kv_cache_cases,
    'bpe_tree.svg': bpe_tree,
}


SHOWN = re.compile(r'!\[[^\]]*\]\((?:attachment:|figures/)([\w-]+)\.(?:svg|png)\)')


def attach(nbs: Path = HERE.parent) -> list[str]:
    """Make every markdown cell of the notebooks in `nbs` that shows a figure show it from an attachment: the
    PNG drawn with it (figures not drawn by this process yet are drawn into a temporary folder). Returns the
    notebooks it changed."""
    if len(PNGS) < len(FIGURES):
        with tempfile.TemporaryDirectory() as tmp:
            for name, draw in FIGURES.items():
                draw(Path(tmp) / name)
    changed = []
    for nb in sorted(nbs.glob('*.ipynb')):
        doc = json.loads(nb.read_text(encoding='utf-8'))
        before = json.dumps(doc)
        for cell in doc['cells']:
            if cell['cell_type'] != 'markdown':
                continue
            text = ''.join(cell['source'])
            names = SHOWN.findall(text)
            others = {
                k: v
                for k, v in cell.get('attachments', {}).items()
                if k.removesuffix('.png') + '.svg' not in FIGURES
            }  # what a person attached stays
            text = SHOWN.sub(lambda m: m[0][: m[0].index('](')] + f'](attachment:{m[1]}.png)', text)
            cell['source'] = text.splitlines(keepends=True)
            cell['attachments'] = others | {
                f'{n}.png': {'image/png': base64.b64encode(PNGS[f'{n}.svg']).decode()} for n in names
            }
            if not cell['attachments']:
                del cell['attachments']
        if json.dumps(doc) != before:
            nb.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
            changed.append(nb.name)
    return changed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        '--out', default=None, help='draw into this folder only (default: nbs/figures, then attach)'
    )
    out = ap.parse_args(argv).out
    folder = Path(out) if out else HERE
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(folder / name)
        print(f'wrote {folder / name}')
    if out is None:
        for name in attach():
            print(f'attached the figures to nbs/{name}')


if __name__ == '__main__':
    main()
