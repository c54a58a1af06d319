"""gptcourse.bpe beyond its lesson: the error paths of `BasicTokenizer` and `apply_merges` at the edges."""

import pytest
from gptcourse.bpe import BasicTokenizer, apply_merges


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
