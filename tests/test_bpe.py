"""gptcourse.bpe beyond its lesson: the error paths of `BasicTokenizer` and `apply_merges` at the edges, and
the incremental trainer against the naive one on random texts."""

import random
import pytest
from pathlib import Path
from gptcourse.bpe import GPT2_PATTERN, MAX_MODEL_BYTES, BasicTokenizer, apply_merges


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


def test_a_saved_tokenizer_is_minbpe_s_format_written_by_hand(tmp_path):
    tok = BasicTokenizer().train('aaabdaaabac', 259)  # Wikipedia's example: aa -> 256, (256, a) -> 257, ...
    assert tok.save(tmp_path / 'w.model').read_text() == 'minbpe v1\n\n0\n97 97\n256 97\n257 98\n'
    back = BasicTokenizer.load(tmp_path / 'w.model')
    assert (
        back.pattern is None
        and back.vocab[258] == b'aaab'
        and back.encode('aaabdaaabac') == [258, 100, 258, 97, 99]
    )


@pytest.mark.parametrize(
    'content, says',
    [
        (b'minbpe v2\n\n0\n', 'not a tokenizer file saved by `save`'),
        (b'minbpe v1\n\n1\n<|endoftext|> 256\n', 'not a tokenizer file saved by `save`'),  # special tokens
        (b'minbpe v1\n', 'not a tokenizer file saved by `save`'),
        (b'\x89PNG\r\n\x1a\n', 'not a tokenizer file saved by `save`'),
        (
            b'minbpe v1\n\n0\n97 98\n256 257\n',
            "line 5: '256 257' is not a merge of two ids below 257",
        ),  # a future id
        (b'minbpe v1\n\n0\n97 x\n', "line 4: '97 x' is not a merge of two ids below 256"),
        (b'minbpe v1\n\n0\n-1 98\n', 'line 4'),
        (b'minbpe v1\n\n0\n97 98\n\n99 100\n', "line 5: '' is not a merge"),
        (b'minbpe v1\n\n0\n97 98 99\n', 'line 4'),
        (b'minbpe v1\n\n0\n97 98\n97 98\n', 'a pair is merged twice'),
    ],
)
def test_load_checks_every_line_and_says_which(tmp_path, content, says):
    (tmp_path / 'bad.model').write_bytes(content)
    with pytest.raises(ValueError, match='bad.model') as e:
        BasicTokenizer.load(tmp_path / 'bad.model')
    assert says in str(e.value), str(e.value)


def test_load_refuses_a_file_too_large_for_a_tokenizer_before_reading_it(tmp_path, monkeypatch):
    big = tmp_path / 'big.model'
    with open(big, 'wb') as f:
        f.truncate(MAX_MODEL_BYTES + 1)  # sparse: no disk spent
    monkeypatch.setattr(Path, 'read_bytes', lambda self: pytest.fail('read'))
    with pytest.raises(ValueError, match=f'{MAX_MODEL_BYTES + 1:,} bytes: not a tokenizer'):
        BasicTokenizer.load(big)
    with pytest.raises(ValueError, match='no such tokenizer file'):
        BasicTokenizer.load(tmp_path / 'nowhere.model')


def test_save_keeps_the_file_there_and_refuses_a_pattern_it_cannot_hold(tmp_path):
    tok = BasicTokenizer().train('abab', 257)
    tok.save(tmp_path / 't.model')
    with pytest.raises(ValueError, match='exists: pass overwrite=True'):
        BasicTokenizer().train('cdcd', 257).save(tmp_path / 't.model')
    assert BasicTokenizer.load(tmp_path / 't.model').merges == {(97, 98): 256}
    tok.pattern = 'a\nb'
    with pytest.raises(ValueError, match='line break'):
        tok.save(tmp_path / 'u.model')
    assert not (tmp_path / 'u.model').exists()
