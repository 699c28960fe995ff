"""Key files: the coordinator's and each site's long-lived keys, written and read in one place.

Three kinds of key, each for one job:
- Ed25519 *signing* keys: a site signs its shards, the coordinator signs releases.
- X25519 *sealing* keys: shards are sealed to the coordinator, audit candidates to each site, so
  that the SuperLink in between only ever stores ciphertext.
- EC P-384 *node* keys in OpenSSH format: what Flower's SuperNode authentication accepts
  (`flower-supernode --auth-supernode-private-key`, `flwr supernode register`).

Private keys are written with mode 0600 from the first byte (never chmod-ed after the fact), a
file that exists is never silently replaced, every file is written atomically, and none is ever
written through a symbolic link (`write_file_atomic`). Nothing here logs key material.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

K = TypeVar("K")

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, of the wrong kind, or too open."""


def check_writable(path: Path, *, overwrite: bool = False) -> None:
    """Raise `FileExistsError` unless a key, certificate or public file may be written at `path`.

    Refused: a symbolic link at `path` (whatever it points to: a key is never written through a
    link), anything there that is not a regular file, and an existing file unless `overwrite`.
    Callers that write several files check them all first, so a refusal leaves every file as it was.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise FileExistsError(f"{path} is a symbolic link; refusing to write a key or certificate through it (remove the link)")
    if not stat.S_ISREG(info.st_mode):
        raise FileExistsError(f"{path} exists and is not a regular file; refusing to replace it")
    if not overwrite:
        raise FileExistsError(f"{path} exists; refusing to replace it (rotate keys with --force)")


def write_file_atomic(path: Path, data: bytes, *, mode: int, overwrite: bool = False) -> None:
    """Write `data` to `path` with permissions `mode`, all at once, never through a symbolic link.

    The bytes go to a new temporary file beside `path` (created exclusively, not following links,
    with `mode` from the first byte), are flushed to disk, and then take `path`'s place: renamed
    over it with `overwrite` (a rename replaces a link that appeared meanwhile, never its target),
    hard-linked to it otherwise (which fails if anything appeared meanwhile). A reader sees the old
    file or the new one, never a part.

    Raises:
        FileExistsError: as `check_writable`.
        OSError: the folder cannot be created or written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_writable(path, overwrite=overwrite)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # exactly `mode`, whatever the umask
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            check_writable(path, overwrite=True)
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                check_writable(path, overwrite=False)  # says why: a link or a file appeared since the first check
                raise
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_secret(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """A private key: `write_file_atomic` with mode 0600; an existing file is replaced only with `overwrite`."""
    write_file_atomic(path, data, mode=PRIVATE_MODE, overwrite=overwrite)


def write_public(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """A public key, certificate or public file: `write_file_atomic` with mode 0644."""
    write_file_atomic(path, data, mode=PUBLIC_MODE, overwrite=overwrite)


def _read_private(path: Path) -> bytes:
    if not path.is_file():
        raise KeyFileError(f"private key {path} not found")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"private key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from None


def _read_public(path: Path) -> bytes:
    if not path.is_file():
        raise KeyFileError(f"public key {path} not found")
    return path.read_bytes()


# --- Ed25519 signing keys -------------------------------------------------------------------------


def new_signing_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def signing_key_pem(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> bytes:
    """PKCS#8 PEM of a signing or sealing private key, unencrypted: the file's 0600 mode protects it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    return _expect(_load_private_pem(path), ed25519.Ed25519PrivateKey, f"{path} is not an Ed25519 signing key")


def load_verify_key(path: Path) -> ed25519.Ed25519PublicKey:
    return verify_key_from_pem(_read_public(path), str(path))


def verify_key_from_pem(data: bytes, where: str = "key") -> ed25519.Ed25519PublicKey:
    return _expect(_public_from_pem(data, where), ed25519.Ed25519PublicKey, f"{where} is not an Ed25519 public key")


# --- X25519 sealing keys --------------------------------------------------------------------------


def new_sealing_key() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.generate()


sealing_key_pem = signing_key_pem


def load_sealing_key(path: Path) -> x25519.X25519PrivateKey:
    return _expect(_load_private_pem(path), x25519.X25519PrivateKey, f"{path} is not an X25519 sealing key")


def load_seal_to_key(path: Path) -> x25519.X25519PublicKey:
    return seal_to_key_from_pem(_read_public(path), str(path))


def seal_to_key_from_pem(data: bytes, where: str = "key") -> x25519.X25519PublicKey:
    return _expect(_public_from_pem(data, where), x25519.X25519PublicKey, f"{where} is not an X25519 public key")


# --- SuperNode authentication keys (Flower's format) ----------------------------------------------


def new_node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def node_key_openssh(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())


def node_public_openssh(key: ec.EllipticCurvePublicKey, comment: str = "") -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + (b" " + comment.encode() if comment else b"") + b"\n"


def load_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_ssh_public_key(_read_public(path).strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not an OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{path} is not an EC (NIST curve) key, which Flower's SuperNode authentication needs")
    return key


# --- identifiers ----------------------------------------------------------------------------------


def key_id(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey | ec.EllipticCurvePublicKey) -> str:
    """A short, stable fingerprint of a public key: the first 16 hex digits of SHA-256 of its DER."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def _expect(key: object, kind: type[K], message: str) -> K:
    if not isinstance(key, kind):
        raise KeyFileError(message)
    return key


def _load_private_pem(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(_read_private(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not a PEM private key: {exc}") from None


def _public_from_pem(data: bytes, where: str) -> object:
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{where} is not a PEM public key: {exc}") from None
