"""gptcourse.tokenizer beyond its lesson: BPE of a long piece takes about linear work, not quadratic."""

import random
from gptcourse.bpe import apply_merges
from gptcourse.tokenizer import GPT2Tokenizer, apply_merges_fast


class CountingRanks(dict):
    "A ranks dict that counts its look-ups: the work BPE does, independent of the machine's speed."

    lookups = 0

    def get(self, key, default=None):
        CountingRanks.lookups += 1
        return super().get(key, default)

    def __contains__(self, key):
        CountingRanks.lookups += 1
        return super().__contains__(key)

    def __getitem__(self, key):
        CountingRanks.lookups += 1
        return super().__getitem__(key)


def test_long_piece_takes_linear_work():
    tok = GPT2Tokenizer.load()
    ranks = CountingRanks(tok.ranks)
    rng = random.Random(0)
    n = 2000
    piece = [tok.byte_ids[b] for b in bytes(rng.choice(b'abcdefghijklmnopqrstuvwxyz') for _ in range(n))]
    CountingRanks.lookups = 0
    fast = apply_merges_fast(piece, ranks, tok.merges)
    assert CountingRanks.lookups < 20 * n, CountingRanks.lookups  # O(n log n) with a tiny log: a few per byte
    assert fast == apply_merges(piece, tok.ranks, tok.merges)


def test_tokenizer_uses_the_fast_merges():
    tok = GPT2Tokenizer.load(cache_size=0)
    tok.ranks = CountingRanks(tok.ranks)
    CountingRanks.lookups = 0
    ids = tok.encode_ordinary('x' * 3000 + 'y' * 3000)
    assert CountingRanks.lookups < 20 * 6000 and tok.decode(ids) == 'x' * 3000 + 'y' * 3000
