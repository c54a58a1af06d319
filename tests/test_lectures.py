"""The lectures beside the lessons: every link to a lecture's video goes to the second where one of its
chapters starts (the chapter table below, from the videos' own descriptions, as ../shared/LECTURES.md records
them), its text names that time and chapter, every lesson that follows a lecture links it, and each lesson's
first moment in a lecture comes after the one of the lesson before (the course goes through each lecture in
order)."""

import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Chapter starts in seconds. Lecture 1: all of its chapters; lecture 2: those its description gives a time for
# (the
# others are linked by name, to the video, never at a guessed second).
CHAPTERS = {
    'kCc8FmEb1nY': {  # Let's build GPT: from scratch, in code, spelled out
        0: 'intro',
        472: 'reading and exploring the data',
        568: 'tokenization, train/val split',
        867: 'data loader: batches of chunks of data',
        1331: 'simplest baseline: bigram language model, loss, generation',
        2093: 'training the bigram model',
        2280: 'port our code to a script',
        2533: 'version 1: averaging past context with for loops',
        2831: 'the trick in self-attention: matrix multiply as weighted aggregation',
        3114: 'version 2: using matrix multiply',
        3282: 'version 3: adding softmax',
        3420: 'erratum: tokens from the future cannot communicate',
        3506: 'minor code cleanup',
        3618: 'positional encoding',
        3720: 'the crux of the video: version 4, self-attention',
        4298: 'note 1: attention as communication',
        4366: 'note 2: attention has no notion of space',
        4420: 'note 3: no communication across the batch dimension',
        4454: 'note 4: encoder blocks vs decoder blocks',
        4539: 'note 5: attention vs self-attention vs cross-attention',
        4616: 'note 6: "scaled" self-attention',
        4751: 'inserting a single self-attention block to our network',
        4919: 'multi-headed self-attention',
        5065: 'feedforward layers of transformer block',
        5208: 'residual connections',
        5571: 'layernorm (and its relationship to our previous batchnorm)',
        5869: 'scaling up the model! creating a few variables. adding dropout',
        6159: 'encoder vs decoder vs both Transformers',
        6382: 'super quick walkthrough of nanoGPT, batched multi-headed self-attention',
        6533: 'back to ChatGPT, GPT-3, pretraining vs finetuning, RLHF',
    },
    'l8pRSuU81PU': {  # Let's reproduce GPT-2 (124M)
        0: 'intro',
        219: 'exploring the GPT-2 (124M) OpenAI checkpoint',
        827: 'SECTION 1: implementing the GPT-2 nn.Module',
        1688: 'loading the huggingface/GPT-2 parameters',
        1860: 'implementing the forward pass to get logits',
        2011: 'sampling init, prefix tokens, tokenization',
        2222: 'sampling loop',
        2507: 'sample, auto-detect the device',
        2750: "let's train: data batches (B,T) → logits (B,T,C)",
        3173: 'cross entropy loss',
        3402: 'optimization loop: overfit a single batch',
        3720: 'data loader lite',
        3974: 'parameter sharing wte and lm_head',
        4427: 'model initialization: std 0.02, residual init',
        4938: "SECTION 2: Let's make it fast. GPUs, mixed precision, 1000ms",
        # Section 3's chapters, as a transcription of the description's chapter list gives them
        # (github.com/theogbrand/learning_llm_handbook, Week 3.3); the rest of section 2 has no time found yet
        8095: 'SECTION 3: hyperparameters, AdamW, gradient clipping',
        8466: 'learning rate scheduler: warmup + cosine decay',
        8781: 'batch size schedule, weight decay, FusedAdamW, 90ms',
        9249: 'gradient accumulation',
        10012: 'distributed data parallel (DDP)',
        11421: 'datasets used in GPT-2, GPT-3, FineWeb (EDU)',
        12190: 'validation data split, validation loss, sampling revive',
        12503: 'evaluation: HellaSwag, starting the run',
    },
}
# The lessons that follow a lecture, each linking it at least once.
FOLLOWING = ['00', '01', '02', '03', '04', '05', '06', '07', '08', '09'] + [str(n) for n in range(11, 21)]
ORDER = 'out of the lecture’s order'  # what a lesson says where it takes a chapter earlier or later
LINK = re.compile(r'https://www\.youtube\.com/watch\?v=([\w-]+)(?:&t=(\d+))?')


def links(nb: Path) -> list[tuple[str, int | None, str]]:
    "Each video link in the lesson's prose: (video, second or None, the line it is on)."
    found = []
    for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
        if c['cell_type'] != 'markdown':
            continue
        for line in ''.join(c['source']).split('\n'):
            found += [(m[1], int(m[2]) if m[2] else None, line) for m in LINK.finditer(line)]
    return found


def hms(s: int) -> str:
    return f'{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}'


def problems(lessons: dict[str, list]) -> list[str]:
    "What is wrong with the links of `lessons` ({number: links(nb)}), one line each."
    found, last = [], {}
    for n, ls in sorted(lessons.items()):
        for video, t, line in ls:
            if video not in CHAPTERS:
                found.append(f'lesson {n}: {video} is not one of the lectures')
            elif t is not None and t not in CHAPTERS[video]:
                found.append(f'lesson {n}: second {t} of {video} is no chapter start')
            elif t is not None and t != 3420 and f'at {hms(t)}' not in line:
                found.append(f'lesson {n}: the link to second {t} does not say {hms(t)}')
        for video in CHAPTERS:  # a link that says it is out of the lecture's order is not a step back
            times = [t for v, t, line in ls if v == video and t is not None and ORDER not in line]
            if times and min(times) < last.get(video, 0):
                found.append(f'lesson {n} goes back in {video}: {hms(min(times))} after {hms(last[video])}')
            if times:
                last[video] = min(times)
        if n in FOLLOWING and not ls:
            found.append(f'lesson {n} follows a lecture but links none')
    return found


def test_every_lesson_that_follows_a_lecture_links_it_at_its_chapters_in_order():
    lessons = {nb.name[:2]: links(nb) for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))}
    assert not problems(lessons), '\n'.join(problems(lessons))
    assert sum(len(ls) for ls in lessons.values()) >= 30


@pytest.mark.parametrize(
    'planted, says',
    [
        ('▶ [Lecture 1 at 0:07:53](https://www.youtube.com/watch?v=kCc8FmEb1nY&t=473)', 'no chapter start'),
        (
            '▶ [Lecture 1 at 0:09:28](https://www.youtube.com/watch?v=kCc8FmEb1nY&t=472)',
            'does not say 0:07:52',
        ),
        (
            '▶ [Lecture 1 at 1:02:00](https://www.youtube.com/watch?v=kCc8FmEb1nY&t=3720)',
            'lesson 01 goes back',
        ),
        ('▶ [a talk](https://www.youtube.com/watch?v=dQw4w9WgXcQ)', 'is not one of the lectures'),
        (
            '▶ [Lecture 1 at 1:02:00](https://www.youtube.com/watch?v=kCc8FmEb1nY&t=3720) — out of order',
            'lesson 01 goes back',
        ),
    ],
)
def test_the_check_catches_a_wrong_second_a_wrong_text_a_step_back_and_another_video(planted, says):
    video, t, _ = next(iter(links_of(planted)))
    lessons = {'00': [(video, t, planted)], '01': [('kCc8FmEb1nY', 1331, '▶ [Lecture 1 at 0:22:11]')]}
    if 'goes back' in says:  # a lesson before it that is further into the lecture
        lessons = {'00': [('kCc8FmEb1nY', 3720, planted)], '01': [('kCc8FmEb1nY', 1331, 'at 0:22:11')]}
    found = problems(lessons)
    assert any(says in p for p in found), found
    assert not problems(
        {'00': [('kCc8FmEb1nY', 472, 'at 0:07:52')], '01': [('kCc8FmEb1nY', 1331, 'at 0:22:11')]}
    )


def links_of(line: str):
    return [(m[1], int(m[2]) if m[2] else None, line) for m in LINK.finditer(line)]


def test_a_link_that_says_it_is_out_of_the_lecture_s_order_is_no_step_back():
    said = f'▶ [Lecture 1 at 1:02:00](https://www.youtube.com/watch?v=kCc8FmEb1nY&t=3720) — {ORDER}: ...'
    lessons = {'00': [('kCc8FmEb1nY', 3720, said)], '01': [('kCc8FmEb1nY', 1331, 'at 0:22:11')]}
    assert not problems(lessons)
    lessons['00'][0] = ('kCc8FmEb1nY', 3720, said.replace(ORDER, 'in order'))
    assert any('lesson 01 goes back' in p for p in problems(lessons))
