"""The coordinator's signature over a release's manifest.

The manifest lists every file of a release with its SHA-256, so one signature over its exact
bytes vouches for the whole folder: whoever holds the coordinator's public key can check a copy
fetched from anywhere (shared/release_verify.py). The signed message is prefixed with a domain
string so that a release signature can never be replayed as a signature over anything else the
same key signs (a shard, another protocol's message), nor the other way round.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedkr.shared.keys import key_id, write_public
from fedkr.shared.release_verify import (
    MANIFEST_FILE,
    SIGNATURE_ALGORITHM,
    SIGNATURE_DOMAIN,
    SIGNATURE_FILE,
    signed_message,
)

__all__ = ["MANIFEST_FILE", "SIGNATURE_ALGORITHM", "SIGNATURE_DOMAIN", "SIGNATURE_FILE", "sign_release", "signed_message"]


def sign_release(release_dir: Path, key: Ed25519PrivateKey) -> Path:
    """Sign `release_dir/manifest.json` and write `manifest.sig` next to it; return its path.

    Call it only after the release gate passed and the folder is complete: the signature covers
    the manifest, and through its hashes every file; anything changed afterwards fails
    verification. The file is written to a temporary name and renamed, so a reader never sees a
    half-written signature, and never through a symbolic link (`keys.write_file_atomic`). Signing
    again (key rotation) replaces the old signature.
    """
    release_dir = Path(release_dir)
    manifest_path = release_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{release_dir}: no {MANIFEST_FILE} to sign (is this a fedkr release folder?)")
    manifest_bytes = manifest_path.read_bytes()
    document = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(signed_message(manifest_bytes))).decode("ascii"),
    }
    path = release_dir / SIGNATURE_FILE
    write_public(path, (json.dumps(document, indent=2) + "\n").encode(), overwrite=True)
    return path
