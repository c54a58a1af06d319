"""The download against a real HTTP server on 127.0.0.1, the tokenizer as a property, batches, and
the error cases of gptcourse.data."""
import hashlib, http.server, threading
import pytest, torch
from hypothesis import given, settings, strategies as st
from gptcourse.data import (CharTokenizer, ChecksumError, DownloadError, atomic_write, download, get_batch,
                            train_val_split, sha256sum)

GOOD = b'First Citizen:\nBefore we proceed any further, hear me speak.\n' * 100
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()

class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {'/good.txt': GOOD, '/tampered.txt': GOOD[:-1] + b'?'}
    def do_GET(self):
        body = self.routes.get(self.path)
        if body is None: self.send_error(404); return
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

@pytest.fixture(scope='module')
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()

def test_download_good_file(server, tmp_path):
    path = download(f'{server}/good.txt', 'good.txt', GOOD_SHA, folder=tmp_path, progress=False)
    assert path == tmp_path/'good.txt' and path.read_bytes() == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good.txt']   # no temporary file left

def test_download_wrong_bytes_leaves_nothing(server, tmp_path):
    with pytest.raises(ChecksumError) as e:
        download(f'{server}/tampered.txt', 'shakespeare.txt', GOOD_SHA, folder=tmp_path, progress=False)
    msg = str(e.value)
    assert 'shakespeare.txt' in msg and GOOD_SHA in msg and hashlib.sha256(GOOD[:-1] + b'?').hexdigest() in msg
    assert list(tmp_path.iterdir()) == []

def test_download_404_names_the_url(server, tmp_path):
    url = f'{server}/missing.txt'
    with pytest.raises(DownloadError, match='missing.txt') as e:
        download(url, 'missing.txt', GOOD_SHA, folder=tmp_path, progress=False)
    assert url in str(e.value) and '404' in str(e.value)
    assert list(tmp_path.iterdir()) == []

def test_cached_file_is_reused_and_a_corrupt_one_replaced(server, tmp_path):
    (tmp_path/'good.txt').write_bytes(GOOD)
    assert download('http://127.0.0.1:9/unreachable', 'good.txt', GOOD_SHA, folder=tmp_path) == tmp_path/'good.txt'
    (tmp_path/'good.txt').write_bytes(b'corrupt')
    with pytest.warns(UserWarning, match='downloading it again'):
        download(f'{server}/good.txt', 'good.txt', GOOD_SHA, folder=tmp_path, progress=False)
    assert sha256sum(tmp_path/'good.txt') == GOOD_SHA

TOK = CharTokenizer("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=TOK.chars))
def test_round_trip_over_the_vocabulary(s):
    ids = TOK.encode(s)
    assert len(ids) == len(s) and all(0 <= i < 65 for i in ids)
    assert TOK.decode(ids) == s
    assert TOK.decode(torch.tensor(ids, dtype=torch.long)) == s

@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=TOK.chars), st.characters().filter(lambda c: c not in TOK.chars), st.text(alphabet=TOK.chars))
def test_unknown_character_is_named(a, bad, b):
    with pytest.raises(ValueError) as e: TOK.encode(a + bad + b)
    assert repr(bad) in str(e.value)

@pytest.mark.parametrize('ids', [[65], [-1], [0, 1, 1000]])
def test_decode_rejects_ids_outside_the_vocabulary(ids):
    with pytest.raises(ValueError, match='0..64'): TOK.decode(ids)

def test_repeated_characters_are_not_a_vocabulary():
    with pytest.raises(ValueError, match='repeated'): CharTokenizer('abca')

def test_batches():
    data = torch.arange(1000)
    x, y = get_batch(data, 16, 10, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 10) and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match='block_size=10'): get_batch(data[:10], 4, 10)
    tr, va = train_val_split(data, 0.9)
    assert len(tr) == 900 and len(va) == 100
    with pytest.raises(ValueError, match='train_frac'): train_val_split(data, 1.5)


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    "A writer killed mid-write leaves its temporary file; the next write into the folder removes it, and only it."
    import os, subprocess, sys
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f'.step_0000010.safetensors.{dead_pid}.abc123.tmp'; stale.write_bytes(b'x' * 1000)
    mine = tmp_path / f'.other.{os.getpid()}.def456.tmp'; mine.write_bytes(b'in progress')
    unrelated = tmp_path / '.notes.tmp'; unrelated.write_bytes(b'keep me')
    with atomic_write(tmp_path / 'step_0000020.safetensors') as f: f.write(b'new')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, unrelated.name, 'step_0000020.safetensors'])


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    (tmp_path / 'a.bin').write_bytes(b'good')
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / 'a.bin') as f: f.write(b'half'); raise RuntimeError('crash')
    assert (tmp_path / 'a.bin').read_bytes() == b'good' and [p.name for p in tmp_path.iterdir()] == ['a.bin']
