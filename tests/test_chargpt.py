"""gptcourse.chargpt beyond its lesson: what the lecture's model refuses, with a message that says so."""
import pytest, torch
from gptcourse.chargpt import CharGPT, CharGPTConfig


@pytest.fixture(scope='module')
def model():
    return CharGPT(CharGPTConfig(vocab_size=65, block_size=8, n_embd=16, n_head=2, n_layer=1)).eval()


@pytest.mark.parametrize('idx, says', [
    (torch.tensor([[1, 65]]), 'token id 65 is outside the vocabulary: ids are 0..64'),
    (torch.tensor([[0.5]]), 'got a 2-D torch.float32 tensor'),
    (torch.tensor([1, 2]), 'got a 1-D torch.int64 tensor'),
    (torch.zeros(1, 9, dtype=torch.long), 'the context has 9 positions but block_size is 8'),
])
def test_the_lectures_model_refuses_bad_input_in_one_line(model, idx, says):
    with pytest.raises(ValueError) as e: model(idx)
    assert says in str(e.value) and '\n' not in str(e.value)


def test_a_full_context_is_fine(model):
    logits, loss = model(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    assert logits.shape == (2, 8, 65) and torch.isfinite(loss)
