"""Lesson 17 beyond its notebook: a downloaded split is kept only if it checks out (against a server on
127.0.0.1), and scoring is by the mean of an ending's token losses (not their sum) on endings of very
different lengths."""

import http.server, json, threading
import pytest, torch
import gptcourse.hellaswag as hs
from gptcourse.data import DownloadError
from gptcourse.gpt2 import GPT, GPTConfig
from gptcourse.pretrained import gpt2_tokenizer

LINE = json.dumps({'ctx': 'a', 'endings': ['b', 'c', 'd', 'e'], 'label': 1}) + '\n'


@pytest.fixture()
def server():
    served = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = served.get(self.path.rsplit('/', 1)[-1])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/hellaswag_{{split}}.jsonl', served
    srv.shutdown()
    srv.server_close()


def test_a_split_is_kept_only_if_it_checks_out(server, tmp_path, monkeypatch):
    url, served = server
    monkeypatch.setattr(hs, 'HELLASWAG_URL', url)
    served['hellaswag_val.jsonl'] = (LINE * 3).encode()
    with pytest.raises(DownloadError, match='holds 3 HellaSwag val examples, not 10042'):
        hs.load_hellaswag('val', tmp_path)
    assert list(tmp_path.iterdir()) == []  # a short download is not kept
    served['hellaswag_val.jsonl'] = (LINE * 10042).encode()
    assert len(hs.load_hellaswag('val', tmp_path)) == 10042
    monkeypatch.setattr(hs, 'HELLASWAG_URL', 'http://127.0.0.1:9/{split}')
    assert len(hs.load_hellaswag('val', tmp_path)) == 10042  # kept: no network needed again
    with pytest.raises(DownloadError, match='without internet, put a copy at'):
        hs.load_hellaswag('test', tmp_path)


def test_scoring_is_by_the_mean_of_the_ending_s_token_losses():
    "A long ending of likely tokens beats a short unlikely one: the mean chooses it, the sum would not."
    enc = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    long, short = ' the the the the the the the the the the the the', ' zebra'
    the = enc.encode(' the')[0]
    with torch.no_grad():
        model.lm_head.weight[the] += 0.5  # ' the' is likely after anything
    ex = {'ctx': 'Once upon a time', 'endings': [short, long, short, short], 'label': 1}
    tokens, mask, label = hs.render_example(ex, enc)
    losses = hs.completion_losses(model, tokens, mask)
    per_token = (
        torch.nn.functional.cross_entropy(
            model(tokens)[0][:, :-1].transpose(1, 2), tokens[:, 1:], reduction='none'
        )
        * mask[:, 1:]
    )
    assert torch.allclose(losses, per_token.sum(1) / mask[:, 1:].sum(1), atol=1e-5)  # the mean, by hand
    assert int(losses.argmin()) == 1 and int(per_token.sum(1).argmin()) != 1  # sum and mean disagree
    assert hs.hellaswag_acc_norm(model, [ex]) == 1.0


@pytest.mark.parametrize(
    'content, msg',
    [('', 'holds no HellaSwag examples'), ('{"ctx": 1}', 'needs "ctx"'), ('not json', 'not JSON')],
)
def test_bad_files_are_refused_when_read(tmp_path, content, msg):
    (tmp_path / 'f.jsonl').write_text(content)
    with pytest.raises(ValueError, match=msg):
        hs.read_hellaswag(tmp_path / 'f.jsonl')
    with pytest.raises(ValueError, match='is not a file'):
        hs.read_hellaswag(tmp_path)


def test_two_processes_score_each_their_share_and_sum_to_one_processs_accuracy(tmp_path):
    """Under torchrun each rank scores its own share (examples rank, rank + 2, ...) and the counts are summed:
    two processes give exactly one process's accuracy on examples whose shares differ (a rank scoring rank 0's
    share would count those twice)."""
    import os, socket, subprocess, sys, textwrap

    examples = [
        dict(ctx=f'Example {i}:', endings=[' yes', ' no', ' maybe', ' never'], label=i % 4) for i in range(6)
    ]
    (tmp_path / 'ex.json').write_text(json.dumps(examples))
    script = tmp_path / 'score.py'
    script.write_text(
        textwrap.dedent(f'''
        import json, torch
        from gptcourse.distributed import setup_distributed
        from gptcourse.gpt2 import GPT, GPTConfig
        from gptcourse.hellaswag import hellaswag_acc_norm
        info = setup_distributed('cpu')
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=32, vocab_size=50257, n_layer=1, n_head=2, n_embd=16))
        ex = json.loads(open({str(tmp_path / 'ex.json')!r}).read())
        acc = hellaswag_acc_norm(model, ex, 'cpu', info.rank, info.world_size)
        if info.master: print(acc)
        info.close()''')
    )
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    r = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node',
            '2',
            '--master_addr',
            '127.0.0.1',
            '--master_port',
            str(port),
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=50257, n_layer=1, n_head=2, n_embd=16))
    one = hs.hellaswag_acc_norm(model, examples, 'cpu')
    by_hand = sum(
        int(hs.completion_losses(model, *hs.render_example(e)[:2]).argmin()) == e['label'] for e in examples
    ) / len(examples)
    assert float(r.stdout.strip().splitlines()[-1]) == one == by_hand, (r.stdout, one, by_hand)
    shares = [
        [
            int(hs.completion_losses(model, *hs.render_example(e)[:2]).argmin()) == e['label']
            for e in examples[k::2]
        ]
        for k in (0, 1)
    ]
    assert sum(shares[0]) != sum(shares[1]), 'the two shares must differ for the test to see a wrong share'
