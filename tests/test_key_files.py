"""Key, certificate and public files are written atomically and never through a symbolic link.

`shared/keys.py: write_file_atomic` is the one writer; `fedkr coordinator init`, `fedkr site init`,
`fedkr site trust`, the registry and the release signature all use it, and check every file before
writing any. The commands run through the `fedkr` command (typer's CliRunner) with real keys.
"""

from __future__ import annotations

import os
import stat

import pytest
from fedkr.shared.keys import PRIVATE_MODE, PUBLIC_MODE, write_public, write_secret
from helpers import one_line_error, run_fedkr


def snapshot(folder):  # type: ignore[no-untyped-def]
    """Every regular file under `folder` with its bytes: what a refused command must leave as it was."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_coordinator_init_force_never_writes_through_a_link(tmp_path):
    keys = tmp_path / "coordinator"
    assert run_fedkr("coordinator", "init", str(keys)).exit_code == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("not a key\n")
    first_key = (keys / "public" / "signing.pub").read_bytes()
    (keys / "public" / "signing.pub").unlink()
    (keys / "public" / "signing.pub").symlink_to(outside)
    before = snapshot(keys)

    one_line_error(run_fedkr("coordinator", "init", str(keys), "--force"), "signing.pub is a symbolic link")
    assert outside.read_text() == "not a key\n"
    assert snapshot(keys) == before, "a refused rotation must leave every key as it was"

    # a dangling link is refused too: the file it names is never created
    (keys / "public" / "signing.pub").unlink()
    (keys / "public" / "signing.pub").symlink_to(tmp_path / "created-elsewhere.pub")
    one_line_error(run_fedkr("coordinator", "init", str(keys), "--force"), "signing.pub is a symbolic link")
    assert not (tmp_path / "created-elsewhere.pub").exists()

    (keys / "public" / "signing.pub").unlink()
    assert run_fedkr("coordinator", "init", str(keys), "--force").exit_code == 0
    rotated = (keys / "public" / "signing.pub").read_bytes()
    assert rotated != first_key and rotated.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_site_init_and_trust_never_write_through_a_link(tmp_path):
    assert run_fedkr("coordinator", "init", str(tmp_path / "coordinator")).exit_code == 0
    site = tmp_path / "site"
    assert run_fedkr("site", "init", str(site), "--name", "hospital-a").exit_code == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    for name in ("node.pub", "coordinator.json"):
        (site / name).unlink(missing_ok=True)
        (site / name).symlink_to(outside)
        before = snapshot(site)
        if name == "node.pub":
            result = run_fedkr("site", "init", str(site), "--name", "hospital-a", "--force")
        else:
            result = run_fedkr("site", "trust", str(site), str(tmp_path / "coordinator" / "public"))
        one_line_error(result, f"{name} is a symbolic link")
        assert outside.read_text() == "keep me\n" and snapshot(site) == before
        (site / name).unlink()


@pytest.mark.parametrize("write, mode", [(write_secret, PRIVATE_MODE), (write_public, PUBLIC_MODE)])
def test_the_writer_is_atomic_exact_and_refuses_links(tmp_path, write, mode):
    path = tmp_path / "k" / "file.pem"
    old_umask = os.umask(0o077)
    try:
        write(path, b"one")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"one" and stat.S_IMODE(path.stat().st_mode) == mode
    with pytest.raises(FileExistsError, match="exists; refusing to replace it"):
        write(path, b"two")
    inode = path.stat().st_ino
    write(path, b"two", overwrite=True)
    assert path.read_bytes() == b"two" and path.stat().st_ino != inode, "replaced by a rename, not rewritten in place"
    assert [p.name for p in path.parent.iterdir()] == ["file.pem"], "no temporary file is left behind"

    target = tmp_path / "target"
    target.write_bytes(b"target")
    path.unlink()
    path.symlink_to(target)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="is a symbolic link"):
            write(path, b"three", overwrite=overwrite)
    assert target.read_bytes() == b"target" and path.is_symlink()


def test_a_release_signature_is_never_written_through_a_link(tmp_path):
    from fedkr.server.release_signing import sign_release
    from fedkr.shared.keys import new_signing_key

    release = tmp_path / "release"
    release.mkdir()
    (release / "manifest.json").write_text("{}")
    outside = tmp_path / "outside.sig"
    outside.write_text("keep me")
    (release / "manifest.sig").symlink_to(outside)
    with pytest.raises(FileExistsError, match="is a symbolic link"):
        sign_release(release, new_signing_key())
    assert outside.read_text() == "keep me"
