"""How the tests run: one torch thread per process (the lessons' kernels and the commands the tests start
inherit it), so that pytest-xdist's workers share a small machine instead of fighting over it (on a busy
2-core machine a CPU run took 780 s with torch's default threads and 58 s with one); and the slowest tests
first, so that no worker is left with a long one at the end."""

import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

SLOW_FIRST = (
    '26_modern',
    'test_readme_commands',
    'test_the_site',
    'test_a_plain_install',
    '07_chargpt',
    'test_gpu_check',
    '19_trainers',
    '20_pretrain',
    '29_tinygpt',  # tinygrad compiles its kernels on the first steps
    'test_ddp',
    '04_self_attention',
    '22_decode',
    '23_quantize',
    '30_fused',
    '06_blocks',
    '05_multihead',
    'test_cli.py',
)


def pytest_collection_modifyitems(config, items):
    rank = lambda item: next((i for i, key in enumerate(SLOW_FIRST) if key in item.nodeid), len(SLOW_FIRST))
    items.sort(key=rank)  # stable: within a rank, the order they were written in
