"""gptcourse.bigram beyond its lesson: `check_ids`, the input check every model of the course runs first,
refuses what is not token ids with one line that says what was wrong and what is allowed."""

import pytest, torch
from gptcourse.bigram import BigramLanguageModel, check_ids


@pytest.mark.parametrize(
    'idx, says',
    [
        (torch.tensor([[1, 65]]), 'token id 65 is outside the vocabulary: ids are 0..64'),
        (torch.tensor([[-1, 2]]), 'token id -1 is outside the vocabulary: ids are 0..64'),
        (torch.tensor([[1.0, 2.0]]), 'got a 2-D torch.float32 tensor'),
        (torch.tensor([[True]]), 'got a 2-D torch.bool tensor'),
        (torch.tensor([1, 2]), 'an integer tensor of shape (B, T); got a 1-D torch.int64 tensor'),
        (torch.zeros(2, 0, dtype=torch.long), 'at least one token per sequence; got T = 0'),
        ([[1, 2]], 'got list'),
    ],
)
def test_the_bigram_model_refuses_what_is_not_token_ids(idx, says):
    with pytest.raises(ValueError) as e:
        BigramLanguageModel(65)(idx)
    assert says in str(e.value) and '\n' not in str(e.value)


def test_check_ids_takes_every_integer_type_and_the_whole_vocabulary():
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        check_ids(torch.tensor([[0, 64]], dtype=dtype), 65)
    logits, loss = BigramLanguageModel(65)(torch.tensor([[0, 64]]), torch.tensor([[64, 0]]))
    assert logits.shape == (1, 2, 65) and loss.item() > 0
