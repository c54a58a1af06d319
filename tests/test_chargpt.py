"""gptcourse.chargpt beyond its lesson: what the lecture's model refuses, with a message that says so."""

import pytest, torch
from gptcourse.chargpt import CharGPT, CharGPTConfig


@pytest.fixture(scope='module')
def model():
    return CharGPT(CharGPTConfig(vocab_size=65, block_size=8, n_embd=16, n_head=2, n_layer=1)).eval()


@pytest.mark.parametrize(
    'idx, says',
    [
        (torch.tensor([[1, 65]]), 'token id 65 is outside the vocabulary: ids are 0..64'),
        (torch.tensor([[0.5]]), 'got a 2-D torch.float32 tensor'),
        (torch.tensor([1, 2]), 'got a 1-D torch.int64 tensor'),
        (torch.zeros(1, 9, dtype=torch.long), 'the context has 9 positions but block_size is 8'),
    ],
)
def test_the_lectures_model_refuses_bad_input_in_one_line(model, idx, says):
    with pytest.raises(ValueError) as e:
        model(idx)
    assert says in str(e.value) and '\n' not in str(e.value)


def test_a_full_context_is_fine(model):
    logits, loss = model(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    assert logits.shape == (2, 8, 65) and torch.isfinite(loss)


def lecture_forward(model, idx):
    """The lecture's model, written out from gpt.py with plain tensor operations (not the course's modules):
    token plus position embeddings; per block x + proj(heads of softmax(q kᵀ / √hs, causal) v), then x +
    MLP(ReLU), both after a LayerNorm; a final LayerNorm and the head."""
    B, T = idx.shape
    x = model.token_embedding_table.weight[idx] + model.position_embedding_table.weight[:T]
    ln = lambda x, m: torch.nn.functional.layer_norm(x, (x.size(-1),), m.weight, m.bias)
    mask = torch.ones(T, T).tril() == 0
    for blk in model.blocks:
        h = ln(x, blk.ln1)
        heads = []
        for head in blk.sa.heads:
            q, k, v = h @ head.query.weight.T, h @ head.key.weight.T, h @ head.value.weight.T
            att = (q @ k.transpose(-2, -1) / k.size(-1) ** 0.5).masked_fill(mask, float('-inf')).softmax(-1)
            heads.append(att @ v)
        x = x + torch.cat(heads, -1) @ blk.sa.proj.weight.T + blk.sa.proj.bias
        l1, l2 = blk.ffwd.net[0], blk.ffwd.net[2]
        x = x + (ln(x, blk.ln2) @ l1.weight.T + l1.bias).relu() @ l2.weight.T + l2.bias
    return ln(x, model.ln_f) @ model.lm_head.weight.T + model.lm_head.bias


def test_chargpt_is_the_lectures_architecture():
    torch.manual_seed(0)
    m = CharGPT(
        CharGPTConfig(vocab_size=65, block_size=16, n_embd=32, n_head=4, n_layer=2, dropout=0.0)
    ).eval()
    idx = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        assert torch.allclose(m(idx)[0], lecture_forward(m, idx), atol=1e-5)
