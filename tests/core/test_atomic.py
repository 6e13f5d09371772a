"""Atomic writes never write through a symlink or a file planted by someone else (issue 22 item 4): the
temporary file is created exclusively under a random name, and the rename replaces a planted link."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from daemon.core.atomic import atomic_write_text, create_exclusive


def test_a_symlink_at_the_old_fixed_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".result.csv.tmp").symlink_to(victim)  # the name aud used to open with a plain open(..., "wb")
    atomic_write_text(out / "result.csv", "a,b\n")
    assert victim.read_text() == "precious\n"
    assert (out / "result.csv").read_text() == "a,b\n"
    assert os.readlink(out / ".result.csv.tmp") == str(victim)  # left alone, not written, not removed


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.csv").symlink_to(victim)
    atomic_write_text(out / "result.csv", "a,b\n")
    assert victim.read_text() == "precious\n"
    assert not (out / "result.csv").is_symlink() and (out / "result.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in out.iterdir()) == ["result.csv"]  # no temporary file left


def test_exclusive_temp_files_never_reuse_a_name_and_get_the_umask_permissions(tmp_path):
    fds = [create_exclusive(tmp_path, ".x.") for _ in range(50)]
    for fd, _ in fds:
        os.close(fd)
    assert len({path for _, path in fds}) == 50
    umask = os.umask(0)
    os.umask(umask)
    assert (fds[0][1].stat().st_mode & 0o777) == 0o666 & ~umask


def test_a_failed_write_leaves_the_target_untouched_and_no_temp(tmp_path):
    target = tmp_path / "r.csv"
    target.write_text("old\n")

    def explode(f):
        f.write(b"partial")
        raise RuntimeError("disk gone")

    from daemon.core.atomic import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


OTHER = "aud-test-other"

ATTACKER = r"""
import os, sys, time
out, victim, stop = sys.argv[1], sys.argv[2], sys.argv[3]
# plant links at every name aud writes (and the old fixed temp names), again and again, until told to stop
names = ["r.csv", ".r.csv.tmp", "r.json", ".r.json.tmp"]
while not os.path.exists(stop):
    for name in names:
        path = os.path.join(out, name)
        try:
            if not os.path.islink(path):
                os.symlink(victim, path)
        except OSError:
            pass
    time.sleep(0.001)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a second local account needs root (useradd)")
@pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd on this system")
def test_a_second_account_writing_a_shared_outbox_cannot_redirect_the_writes():
    """Another local user who may write the shared outbox plants symlinks at every name aud writes while
    aud writes; aud's files land in the outbox and the victim (writable by aud's user only) is intact."""
    try:
        pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER], check=True)
    other = pwd.getpwnam(OTHER)
    tmp_path = Path(tempfile.mkdtemp(prefix="aud-shared-", dir="/tmp"))  # reachable by the other account
    tmp_path.chmod(0o755)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable  # one the other account may run
    shared = tmp_path / "shared-outbox"
    shared.mkdir()
    shared.chmod(0o777)  # a shared lab folder, writable by both (no sticky bit)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)  # only aud's user (root here) may write it
    stop = tmp_path / "stop"
    script = tmp_path / "attacker.py"
    script.write_text(ATTACKER)
    script.chmod(0o644)

    def drop_privileges() -> None:
        os.setgid(other.pw_gid)
        os.setuid(other.pw_uid)

    attacker = subprocess.Popen([python, str(script), str(shared), str(victim), str(stop)],
                                preexec_fn=drop_privileges)
    try:
        for i in range(200):
            atomic_write_text(shared / "r.json", f'{{"n": {i}}}\n')
            atomic_write_text(shared / "r.csv", f"n\n{i}\n")
    finally:
        stop.touch()
        attacker.wait(30)
    planted = [p for p in shared.iterdir() if p.is_symlink()]
    assert planted, "the other account planted no link (the attack did not run)"
    assert victim.read_text() == "precious\n"
    assert not (shared / "r.csv").is_symlink() or os.readlink(shared / "r.csv") == str(victim)
    # the attacker may re-plant a link after aud's last rename; aud's own writes never went through one
    links = [p for p in shared.iterdir() if p.is_symlink()]
    assert all(os.lstat(p).st_uid == other.pw_uid for p in links)
    assert all(os.lstat(p).st_uid == 0 for p in shared.iterdir() if not p.is_symlink())
    shutil.rmtree(tmp_path)
