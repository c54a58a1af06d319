"""Lesson 00 beyond its notebook: `fetch` against a real HTTP server on 127.0.0.1 (pooch underneath), the
tokenizer as a property, batches and their error cases."""

import hashlib, http.server, threading
import pytest, torch
from hypothesis import given, settings, strategies as st
from gptcourse.data import CharTokenizer, DownloadError, fetch, get_batch, train_val_split

GOOD = b'First Citizen:\nBefore we proceed any further, hear me speak.\n' * 100
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {'/good.txt': GOOD, '/tampered.txt': GOOD[:-1] + b'?'}

    def do_GET(self):
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope='module')
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()


def test_fetch_good_file(server, tmp_path):
    path = fetch(f'{server}/good.txt', 'good.txt', GOOD_SHA, folder=tmp_path, progress=False)
    assert path == tmp_path / 'good.txt' and path.read_bytes() == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good.txt']  # no temporary file left


def test_fetch_wrong_bytes_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError) as e:
        fetch(f'{server}/tampered.txt', 'shakespeare.txt', GOOD_SHA, folder=tmp_path, progress=False)
    msg = str(e.value)
    assert 'shakespeare.txt' in msg and GOOD_SHA in msg and 'put a copy at' in msg and '\n' not in msg
    assert list(tmp_path.iterdir()) == []


def test_fetch_404_names_the_url_and_where_to_put_a_copy(server, tmp_path):
    url = f'{server}/missing.txt'
    with pytest.raises(DownloadError, match='404') as e:
        fetch(url, 'sub/missing.txt', GOOD_SHA, folder=tmp_path, progress=False)
    assert url in str(e.value) and str(tmp_path / 'sub' / 'missing.txt') in str(e.value)
    assert not any(p.is_file() for p in tmp_path.rglob('*'))


def test_a_cached_file_is_used_offline_and_a_corrupt_one_replaced(server, tmp_path):
    (tmp_path / 'good.txt').write_bytes(GOOD)
    assert (
        fetch('http://127.0.0.1:9/unreachable', 'good.txt', GOOD_SHA, folder=tmp_path)
        == tmp_path / 'good.txt'
    )
    (tmp_path / 'good.txt').write_bytes(b'corrupt')
    with pytest.raises(
        DownloadError, match='without internet, put a copy at'
    ):  # offline: refused, not trusted
        fetch('http://127.0.0.1:9/unreachable', 'good.txt', GOOD_SHA, folder=tmp_path, progress=False)
    fetch(f'{server}/good.txt', 'good.txt', GOOD_SHA, folder=tmp_path, progress=False)
    assert hashlib.sha256((tmp_path / 'good.txt').read_bytes()).hexdigest() == GOOD_SHA


def test_the_data_folder_is_not_made_by_asking_for_it(tmp_path, monkeypatch):
    from gptcourse.data import data_dir

    monkeypatch.setenv('GPTCOURSE_DATA', str(tmp_path / 'not' / 'yet'))
    assert data_dir() == tmp_path / 'not' / 'yet' and not (tmp_path / 'not').exists()


TOK = CharTokenizer("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=TOK.chars))
def test_round_trip_over_the_vocabulary(s):
    ids = TOK.encode(s)
    assert len(ids) == len(s) and all(0 <= i < 65 for i in ids)
    assert TOK.decode(ids) == s
    assert TOK.decode(torch.tensor(ids, dtype=torch.long)) == s


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=TOK.chars),
    st.characters().filter(lambda c: c not in TOK.chars),
    st.text(alphabet=TOK.chars),
)
def test_unknown_character_is_named(a, bad, b):
    with pytest.raises(ValueError) as e:
        TOK.encode(a + bad + b)
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize('ids', [[65], [-1], [0, 1, 1000]])
def test_decode_rejects_ids_outside_the_vocabulary(ids):
    with pytest.raises(ValueError, match='0..64'):
        TOK.decode(ids)


@pytest.mark.parametrize(
    'd', [None, [], {'type': 'char'}, {'type': 'bpe', 'chars': 'ab'}, {'type': 'char', 'chars': 3}]
)
def test_a_saved_tokenizer_that_is_not_one_is_refused(d):
    with pytest.raises(ValueError, match='not a character tokenizer'):
        CharTokenizer.from_dict(d)


def test_repeated_characters_are_not_a_saved_vocabulary():
    with pytest.raises(ValueError, match='not a character tokenizer'):
        CharTokenizer.from_dict({'type': 'char', 'chars': 'abca'})


def test_batches():
    data = torch.arange(1000)
    x, y = get_batch(data, 16, 10, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 10) and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match='block_size=10'):
        get_batch(data[:10], 4, 10)
    tr, va = train_val_split(data, 0.9)
    assert len(tr) == 900 and len(va) == 100
    with pytest.raises(ValueError, match='train_frac'):
        train_val_split(data, 1.5)
