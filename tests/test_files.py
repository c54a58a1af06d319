"""Lesson 10 beyond its notebook: temporary files of killed writers, a failed write, and the folder lock
across processes — refused at once, released when its holder dies however it dies."""

import os, stat, subprocess, sys, time
import pytest
from gptcourse.files import FolderBusy, atomic_write, folder_lock, replacing, swap_in


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """A writer killed mid-write leaves its temporary file; the next write into the folder removes it, and
    only it."""
    dead = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True
    )
    stale = tmp_path / f'.step_0000010.safetensors.{int(dead.stdout)}.abc123.tmp'
    stale.write_bytes(b'x' * 1000)
    mine = tmp_path / f'.other.{os.getpid()}.def456.tmp'
    mine.write_bytes(b'in progress')
    unrelated = tmp_path / '.notes.tmp'
    unrelated.write_bytes(b'keep me')
    with atomic_write(tmp_path / 'step_0000020.safetensors') as f:
        f.write(b'new')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, unrelated.name, 'step_0000020.safetensors']
    )


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    (tmp_path / 'a.bin').write_bytes(b'good')
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / 'a.bin') as f:
            f.write(b'half')
            raise RuntimeError('crash')
    assert (tmp_path / 'a.bin').read_bytes() == b'good' and [p.name for p in tmp_path.iterdir()] == ['a.bin']


def _holder(folder):
    "A process that holds `folder` until it is killed."
    p = subprocess.Popen(
        [
            sys.executable,
            '-c',
            f'''
import time
from gptcourse.files import folder_lock
with folder_lock({str(folder)!r}): print('held', flush=True); time.sleep(600)''',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline() == 'held\n'
    return p


def test_a_held_folder_is_refused_at_once_and_freed_by_kill_9(tmp_path):
    holder = _holder(tmp_path / 'run')
    try:
        t0 = time.perf_counter()
        with pytest.raises(FolderBusy, match=f'in use by another run \\(pid {holder.pid} on '):
            with folder_lock(tmp_path / 'run'):
                pass
        assert (
            time.perf_counter() - t0 < 30
        )  # refused, not waited for (a hang would reach the test's time-out)
    finally:
        holder.kill()
        holder.wait()  # SIGKILL: no clean-up runs; the system drops the lock
    with folder_lock(tmp_path / 'run') as held:
        assert held == tmp_path / 'run'


@pytest.mark.parametrize('where', ['file', 'under_a_file'])
def test_a_folder_that_cannot_be_made_is_one_error(tmp_path, where):
    (tmp_path / 'f').write_text('x')
    folder = tmp_path / 'f' if where == 'file' else tmp_path / 'f' / 'run'
    with pytest.raises(OSError, match='cannot use .* for the run'):
        with folder_lock(folder):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f']


def test_a_lock_file_removed_by_its_holder_is_not_held(tmp_path, monkeypatch):
    """The race a removed lock file opens: B opens `.lock`, A lets go (removing it), B locks the removed file.
    B must notice and lock the folder's new `.lock`, so that a third process C cannot hold it at the same
    time."""
    from gptcourse.files import _hold, _let_go

    folder = tmp_path / 'run'
    a = _hold(folder, 'run')
    early = open(folder / '.lock', 'a+')  # B's open, before A lets go
    _let_go(a, folder / '.lock')
    assert not (folder / '.lock').exists()
    real_open = open

    def open_early_once(path, *args, **kw):  # B's _hold gets the file it opened before
        return early if path == folder / '.lock' and not early.closed else real_open(path, *args, **kw)

    monkeypatch.setattr('builtins.open', open_early_once)
    b = _hold(folder, 'run')
    monkeypatch.undo()
    assert b is not early and os.path.samestat(os.fstat(b.fileno()), os.stat(folder / '.lock'))
    with pytest.raises(FolderBusy):  # C
        with folder_lock(folder):
            pass
    _let_go(b, folder / '.lock')
    assert list(folder.iterdir()) == []


def test_atomic_write_syncs_the_file_before_it_renames_it(tmp_path, monkeypatch):
    "The data reaches the disk before the rename makes it the file: else a crash can leave an empty file."
    calls, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: calls.append('fsync') or real_fsync(fd))
    monkeypatch.setattr(os, 'replace', lambda a, b: calls.append('replace') or real_replace(a, b))
    with atomic_write(tmp_path / 'x.bin') as f:
        f.write(b'data')
    assert calls[:2] == ['fsync', 'replace'] and (tmp_path / 'x.bin').read_bytes() == b'data'


def test_a_file_written_whole_has_the_permissions_of_any_new_file(tmp_path):
    "Not a temporary file's 0600: other users may read a checkpoint or a shard as the umask allows."
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / 'a.bin') as f:
            f.write(b'x')
        with open(tmp_path / 'b.bin', 'wb') as f:  # the reference: a file made the ordinary way
            f.write(b'x')
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    assert mode(tmp_path / 'a.bin') == mode(tmp_path / 'b.bin') == 0o644


def test_a_folder_is_replaced_whole_and_a_swap_stopped_halfway_is_put_right(tmp_path):
    """`swap_in` replaces a folder with two renames; `replacing` first finishes a swap a kill stopped after
    its first rename (the new folder in: the old one deleted) or undoes it (not in: the old one back), refuses
    a file and a folder of files unless asked, and holds the folder while the new one is built."""
    out, new = tmp_path / 'out', tmp_path / '.out.new'
    for folder, name in ((out, 'old.txt'), (new, 'new.txt')):
        folder.mkdir()
        (folder / name).write_text(name)
    (tmp_path / 'a-file').write_text('x')
    with pytest.raises(ValueError, match='a-file is a file, not a folder'):
        replacing(tmp_path / 'a-file', overwrite=True).__enter__()
    with pytest.raises(ValueError, match='already holds files: pass --overwrite'):
        replacing(out, overwrite=False).__enter__()
    os.replace(out, tmp_path / '.out.old-999999')  # stopped between the renames: the old folder aside
    with replacing(out, overwrite=True, what='test') as held:  # put back, then held
        assert sorted(p.name for p in out.iterdir()) == ['.lock', 'old.txt']
        swap_in(new, held)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a-file', 'out']
    assert [p.name for p in out.iterdir()] == ['new.txt']
    os.replace(out, tmp_path / '.out.old-999999')
    (tmp_path / 'out').mkdir()  # stopped after both renames, before the old folder was deleted
    with replacing(out, overwrite=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a-file', 'out'] and not list(out.iterdir())
