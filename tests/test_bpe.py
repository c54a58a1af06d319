"""gptcourse.bpe beyond its lesson: the error paths of `BasicTokenizer` and `apply_merges` at the edges, and
the incremental trainer against the naive one on random texts."""

import random
import pytest
from gptcourse.bpe import GPT2_PATTERN, BasicTokenizer, apply_merges


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match='at least 256'):
        BasicTokenizer().train('abc', 255)


def test_decoding_an_id_outside_the_vocabulary_says_which_are_valid():
    tok = BasicTokenizer().train('aaabdaaabac', 259)
    with pytest.raises(ValueError, match=r'0\.\.258'):
        tok.decode([259])


def test_apply_merges_leaves_short_and_unmergeable_pieces_alone():
    assert apply_merges([], {}) == [] and apply_merges([7], {(7, 7): 0}) == [7]
    assert apply_merges([1, 2], {(2, 3): 0}) == [1, 2]


@pytest.mark.parametrize('trainer', [BasicTokenizer.train, BasicTokenizer.train_incremental])
def test_both_trainers_refuse_a_small_vocabulary_and_an_empty_text(trainer):
    with pytest.raises(ValueError, match='at least 256'):
        trainer(BasicTokenizer(), 'abc', 255)
    with pytest.raises(ValueError, match='empty'):
        trainer(BasicTokenizer(), '', 300)


@pytest.mark.parametrize('pattern', [None, GPT2_PATTERN])
def test_both_trainers_stop_when_nothing_is_left_to_merge(pattern):
    for trainer in (BasicTokenizer.train, BasicTokenizer.train_incremental):
        tok = trainer(BasicTokenizer(), 'aaaa b', 1000, pattern=pattern)
        assert tok.vocab_size < 1000 and tok.decode(tok.encode('aaaa b')) == 'aaaa b'
        assert tok.pattern == pattern


def test_incremental_training_learns_the_naive_merges_on_random_text():
    rng = random.Random(0)
    for _ in range(30):
        text = ''.join(rng.choice('ab c\n\'1é') for _ in range(rng.randrange(1, 200)))
        for pattern in (None, GPT2_PATTERN):
            naive = BasicTokenizer().train(text, 300, pattern=pattern)
            fast = BasicTokenizer().train_incremental(text, 300, pattern=pattern)
            assert fast.merges == naive.merges, (text, pattern)


def test_training_again_forgets_the_earlier_merges_and_pattern():
    tok = BasicTokenizer().train_incremental('the the the', 300)
    tok.train('xyxy', 257)
    assert tok.merges == {(120, 121): 256} and tok.pattern is None
