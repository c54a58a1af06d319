"""Lesson 12 beyond its notebook: the loader refuses what is not what its manifest says — without hanging on a
pipe — and arguments it cannot serve, and leaves out a remainder shard too short for a step."""

import json, os
import numpy as np
import pytest
import torch
from gptcourse.loader import DataLoaderLite
from gptcourse.shards import MANIFEST, prepare, write_shards


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('tokens') / 'shakespeare'
    prepare(None, out, progress=False)
    return out


def test_shards_that_are_not_what_the_manifest_says_are_refused(tmp_path):
    write_shards(tmp_path / 'f', {'train': np.arange(100)})
    np.save(tmp_path / 'f' / 'train_000000.npy', np.arange(100, dtype=np.float64))
    with pytest.raises(ValueError, match='float64 array of 100 values, not the 100 token ids'):
        DataLoaderLite(tmp_path / 'f', 2, 4)
    write_shards(tmp_path / 'i', {'train': np.arange(100) + 50300})
    with pytest.raises(ValueError, match='holds token id 50399, but the model has 50304'):
        DataLoaderLite(tmp_path / 'i', 2, 4, vocab_size=50304)
    assert DataLoaderLite(tmp_path / 'i', 2, 4).next_batch()[0].shape == (
        2,
        4,
    )  # without a vocabulary: no check
    m = json.loads((tmp_path / 'i' / MANIFEST).read_text())
    m['splits']['train'][0]['tokens'] = 1000
    (tmp_path / 'i' / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match='reads tokens 0..1,000 of train_000000.npy, which holds 100'):
        DataLoaderLite(tmp_path / 'i', 2, 4)


def test_a_pipe_for_a_shard_is_refused_not_waited_for(tmp_path):
    write_shards(tmp_path / 'f', {'train': np.arange(100)})
    (tmp_path / 'f' / 'train_000000.npy').unlink()
    os.mkfifo(tmp_path / 'f' / 'train_000000.npy')
    with pytest.raises(ValueError, match='not a regular file'):
        DataLoaderLite(tmp_path / 'f', 2, 4)


def test_bad_loader_arguments_are_refused(data, tmp_path):
    (tmp_path / 'empty').mkdir()
    toks = torch.arange(1000)
    with pytest.raises(ValueError, match=r'rank must be in \[0, world_size=2\)'):
        DataLoaderLite(toks, 2, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match='too few for one step'):
        DataLoaderLite(toks[:10], 2, 8)
    with pytest.raises(ValueError, match='has no readable manifest.json'):
        DataLoaderLite(tmp_path / 'empty', 2, 8)
    with pytest.raises(ValueError, match='does not fit'):
        DataLoaderLite(data, 1, 2).load_state_dict({'shard': 0, 'position': 3})
    write_shards(tmp_path / 'noval', {'train': np.arange(100)})
    with pytest.raises(ValueError, match='has no val shards'):
        DataLoaderLite(tmp_path / 'noval', 2, 8, 'val')


def test_a_remainder_shard_too_short_for_a_step_is_left_out(tmp_path):
    write_shards(tmp_path / 'f', {'train': np.arange(205)}, shard_size=100)  # shards of 100, 100 and 5 tokens
    dl = DataLoaderLite(tmp_path / 'f', 2, 8)
    assert [s.name for s in dl.shards] == ['train_000000.npy', 'train_000001.npy'] and dl.steps_per_shard == [
        6,
        6,
    ]
    with pytest.raises(ValueError, match='the longest holds 100'):
        DataLoaderLite(tmp_path / 'f', 8, 16)


@pytest.mark.parametrize('edit', ['a list', 'a path out of the folder', 'a count that is text'])
def test_a_malformed_manifest_is_one_error(tmp_path, edit):
    "A manifest edited by hand into another shape is refused by name, before a file it names is opened."
    write_shards(tmp_path / 'f', {'train': np.arange(100)})
    m = json.loads((tmp_path / 'f' / MANIFEST).read_text())
    if edit == 'a list':
        m = [m]
    elif edit == 'a path out of the folder':
        m['splits']['train'][0]['file'] = '../secret.npy'
    else:
        m['shards'][0]['tokens'] = '100'
    (tmp_path / 'f' / MANIFEST).write_text(json.dumps(m))
    np.save(tmp_path / 'secret.npy', np.arange(100))
    with pytest.raises(ValueError, match='is not a well-formed manifest of gptcourse shards'):
        DataLoaderLite(tmp_path / 'f', 2, 4)


@pytest.mark.parametrize('n', [47, 48, 49])
def test_steps_of_a_shard_near_a_multiple_of_a_batch(tmp_path, n):
    "A step reads B·T + 1 tokens (the targets are shifted by one): (n - 1) // (B·T) steps in n tokens."
    write_shards(tmp_path / 'f', {'train': np.arange(n)}, shard_size=1000)
    dl = DataLoaderLite(tmp_path / 'f', 2, 8)
    assert dl.steps_per_shard == [(n - 1) // 16]
    for _ in range((n - 1) // 16):
        x, y = dl.next_batch()
        assert y.max() < n and torch.equal(y, x + 1)  # every target is a token of the shard, the next one
