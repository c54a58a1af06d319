"""gptcourse.gpt2 against Hugging Face's GPT2LMHeadModel on a small transformers-saved folder, its errors, the
character model as a GPT configuration, and the gpt2-sample command."""

import inspect, json
import pytest, torch
from safetensors.torch import load_file, save_file
from gptcourse.cli import build_parser
from gptcourse.gpt2 import GPT, GPTConfig
from gptcourse.pretrained import from_pretrained, gpt2_tokenizer, sample_text

transformers = pytest.importorskip('transformers')
SMALL = dict(n_layer=2, n_head=4, n_embd=64, n_positions=32)


@pytest.fixture(scope='module')
def hf_folder(tmp_path_factory):
    "A randomly initialised Hugging Face GPT-2 (small) and the folder it was saved to."
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**SMALL)).eval()
    folder = tmp_path_factory.mktemp('gpt2-small')
    hf.save_pretrained(folder, safe_serialization=True)
    return hf, folder


@pytest.fixture(scope='module')
def ids():
    return torch.tensor([gpt2_tokenizer().encode("Hello, I'm a language model, and this is a test.")])


def _copy(src, dst, config=None, tensors=None, raw=None):
    dst.mkdir()
    (dst / 'config.json').write_text(
        raw if raw is not None else json.dumps(json.loads((src / 'config.json').read_text()) | (config or {}))
    )
    save_file(
        tensors if tensors is not None else load_file(src / 'model.safetensors'), dst / 'model.safetensors'
    )
    return dst


def test_logits_and_loss_match_transformers(hf_folder, ids):
    hf, folder = hf_folder
    model = from_pretrained(folder)
    assert model.config == GPTConfig(block_size=32, n_layer=2, n_head=4, n_embd=64)
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        ref = hf(ids, labels=ids)
        logits, _ = model(ids)
        _, loss = model(ids[:, :-1], ids[:, 1:])
    assert (logits - ref.logits).abs().max() <= 1e-4
    assert abs(loss.item() - ref.loss.item()) < 1e-5


def test_original_hub_layout(hf_folder, ids, tmp_path):
    "Keys without 'transformer.', causal-mask buffers, no lm_head: the layout of openai-community/gpt2."
    _, folder = hf_folder
    t = {k.removeprefix('transformer.'): v for k, v in load_file(folder / 'model.safetensors').items()}
    t |= {f'h.{i}.attn.bias': torch.ones(1, 1, 32, 32).tril() for i in range(2)}
    t |= {f'h.{i}.attn.masked_bias': torch.tensor(-1e4) for i in range(2)}
    with torch.no_grad():
        a = from_pretrained(folder)(ids)[0]
        b = from_pretrained(_copy(folder, tmp_path / 'hub', tensors=t))(ids)[0]
    assert torch.equal(a, b)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'gpt-4'.*gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        from_pretrained('gpt-4')


def test_wrong_shapes_and_keys(hf_folder, tmp_path):
    _, folder = hf_folder
    with pytest.raises(ValueError, match=r'the config says wte, wpe and blocks \(\(50257, 128\)'):
        from_pretrained(_copy(folder, tmp_path / 'wide', config=dict(n_embd=128)))
    for bad in (
        dict(n_head=0),
        dict(n_layer='2'),
        dict(n_layer=2.0),
        dict(n_embd=None),
        dict(vocab_size=[1]),
    ):
        with pytest.raises(ValueError, match='must be an integer >= 1'):
            from_pretrained(_copy(folder, tmp_path / f'bad{len(list(tmp_path.iterdir()))}', config=bad))
    with pytest.raises(ValueError, match='does not describe a gpt2 model'):
        from_pretrained(_copy(folder, tmp_path / 'list', config=None, raw='[1, 2]'))
    t = load_file(folder / 'model.safetensors')
    del t['transformer.ln_f.weight']
    with pytest.raises(ValueError, match=r"missing keys \['transformer.ln_f.weight'\]"):
        from_pretrained(_copy(folder, tmp_path / 'holey', tensors=t))
    t = load_file(folder / 'model.safetensors') | {'transformer.h.0.attn.extra': torch.zeros(2)}
    with pytest.raises(ValueError, match=r"unexpected keys \['transformer.h.0.attn.extra'\]"):
        from_pretrained(_copy(folder, tmp_path / 'extra', tensors=t))


def test_too_long_input():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8))
    assert model(torch.zeros(2, 8, dtype=torch.long))[0].shape == (2, 8, 16)
    with pytest.raises(ValueError, match='length 9: block_size is 8'):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_optimizer_groups():
    from gptcourse.optim import configure_adamw

    with torch.device('meta'):
        model = GPT(GPTConfig())
    assert model.num_params() == 124_439_808
    decay, no_decay = configure_adamw(model, 0.1, 6e-4).param_groups
    assert (len(decay['params']), len(no_decay['params'])) == (50, 98)
    assert sum(p.numel() for p in no_decay['params']) == 121_344 and no_decay['weight_decay'] == 0.0


def test_gpt2_sample_cli(hf_folder, capsys):
    _, folder = hf_folder
    parser = build_parser()
    args = parser.parse_args(
        [
            'gpt2-sample',
            '--model',
            str(folder),
            '--prompt',
            'Once upon a time',
            '--num-samples',
            '2',
            '--max-new-tokens',
            '4',
            '--seed',
            '3',
            '--device',
            'cpu',
        ]
    )
    texts = args.func(args)
    out = capsys.readouterr().out
    assert len(texts) == 2 and all(t.startswith('Once upon a time') and t in out for t in texts)
    assert texts == sample_text(
        from_pretrained(folder), 'Once upon a time', max_new_tokens=4, num_samples=2, seed=3
    )
    bad = parser.parse_args(['gpt2-sample', '--model', 'no-such-model'])
    with pytest.raises(ValueError, match='no checkpoint at no-such-model: no such file or folder'):
        bad.func(bad)


def test_no_transformers_at_run_time():
    "The module reads safetensors itself: transformers is a test dependency only."
    import gptcourse.gpt2

    assert 'transformers' not in inspect.getsource(gptcourse.gpt2)


def test_hub_failure_is_explained(monkeypatch):
    "The hub answers, but the download fails: the message says what failed and what to do instead."
    import huggingface_hub
    from huggingface_hub import constants
    from gptcourse import pretrained

    def offline(*a, **k):
        raise ConnectionError('no network')

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', offline)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)  # as on a machine with internet
    monkeypatch.setattr(pretrained, '_hub_reachable', lambda: True)
    with pytest.raises(
        OSError,
        match='could not get openai-community/gpt2-medium .*ConnectionError: no network.*pass a folder',
    ):
        from_pretrained('gpt2-medium')


def test_dropout_is_off_in_eval_mode():
    "With dropout 0.5, eval mode gives the same logits as the same weights without dropout, every time."
    torch.manual_seed(0)
    cfg = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16)
    a, b = GPT(GPTConfig(dropout=0.5, **cfg)).eval(), GPT(GPTConfig(dropout=0.0, **cfg)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        assert torch.equal(a(x)[0], b(x)[0]) and torch.equal(a(x)[0], a(x)[0])
    a.train()
    with torch.no_grad():
        assert not torch.equal(a(x)[0], b(x)[0])  # and on in training


def test_residual_projections_are_scaled_at_init():
    "Both c_proj layers (attention and MLP) start at N(0, 0.02/sqrt(2 n_layer)); the others at N(0, 0.02)."
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=32, vocab_size=512, n_layer=8, n_head=4, n_embd=256))
    sd, want = m.state_dict(), 0.02 / (2 * 8) ** 0.5
    for i in range(8):
        for name in ('attn.c_proj.weight', 'mlp.c_proj.weight'):
            assert abs(sd[f'transformer.h.{i}.{name}'].std() - want) < 0.1 * want, (i, name)
        assert abs(sd[f'transformer.h.{i}.attn.c_attn.weight'].std() - 0.02) < 0.002


def test_gpt2_uses_the_tanh_gelu():
    "GPT-2's activation is the tanh approximation, which differs from the exact GELU by up to ~1e-3."
    m = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8))
    x = torch.linspace(-4, 4, 1001)
    tanh_gelu = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    act = m.transformer.h[0].mlp.act(x)
    assert (
        torch.allclose(act, tanh_gelu, atol=1e-6) and (act - torch.nn.functional.gelu(x)).abs().max() > 1e-4
    )


@pytest.mark.parametrize(
    'idx, msg',
    [
        (torch.zeros(2, 3), 'integer tensor of shape (B, T)'),
        (torch.zeros(3, dtype=torch.long), 'integer tensor of shape (B, T)'),
        (torch.zeros(2, 0, dtype=torch.long), 'T = 0'),
        (torch.tensor([[1, 16]]), 'token id 16 is outside the vocabulary: ids are 0..15'),
        (torch.tensor([[-1, 2]]), 'token id -1 is outside'),
    ],
)
def test_bad_token_tensors_are_refused(idx, msg):
    m = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError) as e:
        m(idx)
    assert msg in str(e.value)


def test_generate_refuses_float_tokens():
    from gptcourse.train import generate

    m = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match='generate takes token ids'):
        generate(m, torch.zeros(1, 3), 2)


def test_broken_folders_are_one_message(hf_folder, tmp_path):
    _, folder = hf_folder
    trunc = _copy(folder, tmp_path / 'trunc')
    raw = (trunc / 'model.safetensors').read_bytes()
    (trunc / 'model.safetensors').write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match='is not a readable safetensors file'):
        from_pretrained(trunc)
    cfg = json.loads((folder / 'config.json').read_text())
    del cfg['n_embd']
    bad = _copy(folder, tmp_path / 'nokeys')
    (bad / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='lacks n_embd'):
        from_pretrained(bad)
    (bad / 'config.json').write_text('{not json')
    with pytest.raises(ValueError, match='is not a JSON file'):
        from_pretrained(bad)


class ConcatCache:
    """A minimal key/value cache following lesson 21's contract (concatenate; query i sees the cache and
    itself)."""

    def __init__(self, n_layer):
        self.n_layer, self.length, self.k, self.v = n_layer, 0, [None] * n_layer, [None] * 9

    def attend(self, layer, q, k, v):
        if self.k[layer] is not None:
            k, v = torch.cat((self.k[layer], k), 2), torch.cat((self.v[layer], v), 2)
        self.k[layer], self.v[layer] = k, v
        T, L = q.size(2), k.size(2)
        mask = torch.ones(T, L, dtype=torch.bool).tril(L - T)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if layer == self.n_layer - 1:
            self.length += T
        return y


def test_the_model_s_side_of_the_cache_contract():
    """A sequence fed in three pieces through a cache gives the logits of the whole; past block_size is
    refused."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=64, vocab_size=101, n_layer=3, n_head=4, n_embd=32)).eval()
    x = torch.randint(0, 101, (2, 12))
    cache = ConcatCache(3)
    with torch.no_grad():
        full = m(x)[0]
        pieces = torch.cat([m(x[:, a:b], kv_cache=cache)[0] for a, b in [(0, 5), (5, 9), (9, 12)]], dim=1)
    assert torch.allclose(full, pieces, atol=1e-5) and cache.length == 12
    cache.length = 60
    with pytest.raises(ValueError, match=r'length 65 \(60 cached \+ 5 new\): block_size is 64'):
        m(x[:, :5], kv_cache=cache)


def test_the_hub_s_older_layout_loads_the_same(hf_folder, tmp_path, ids):
    "No `transformer.` prefix, and the causal-mask buffers h.N.attn.bias and masked_bias: the same model."
    _, folder = hf_folder
    hub = tmp_path / 'hub'
    hub.mkdir()
    (hub / 'config.json').write_text((folder / 'config.json').read_text())
    tensors = {k.removeprefix('transformer.'): v for k, v in load_file(folder / 'model.safetensors').items()}
    n = json.loads((folder / 'config.json').read_text())['n_positions']
    for i in range(json.loads((folder / 'config.json').read_text())['n_layer']):
        tensors[f'h.{i}.attn.bias'] = torch.ones(n, n).tril().view(1, 1, n, n)
        tensors[f'h.{i}.attn.masked_bias'] = torch.tensor(-1e4)
    save_file(tensors, hub / 'model.safetensors')
    with torch.no_grad():
        assert torch.equal(from_pretrained(hub)(ids)[0], from_pretrained(folder)(ids)[0])


def test_an_end_of_text_token_is_decoded_as_its_text():
    from gptcourse.pretrained import EOT

    class AlwaysEOT(torch.nn.Module):
        block_size = 8

        def forward(self, idx, targets=None):
            return torch.nn.functional.one_hot(torch.full_like(idx, EOT), 50257).float() * 100, None

        def parameters(self, recurse=True):
            yield torch.zeros(1)

    assert sample_text(AlwaysEOT(), 'Once', max_new_tokens=2) == ['Once<|endoftext|><|endoftext|>']
