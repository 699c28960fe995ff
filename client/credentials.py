"""A site's key folder: its SuperNode key, signing and sealing keys, and the coordinator it trusts.

Layout of `fedkr site init DIR --name NAME` (private files 0600):

    node.key  node.pub        EC P-384, OpenSSH format: Flower's SuperNode authentication
    signing.key               Ed25519: signs every shard the site sends
    sealing.key               X25519: the coordinator seals audit candidates to it
    site.json                 the public parts, to hand to the coordinator operator
    coordinator.json  ca.pem  copied from the coordinator's public/ folder

With `keys-dir` in the SuperNode's node config, a site sends nothing unsealed and accepts no
unsealed audit candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from fedkr.shared import keys
from fedkr.shared.json_input import JSONInputError, check_schema, read_json_file
from fedkr.shared.site_identity import (
    COORDINATOR_FORMAT,
    COORDINATOR_SCHEMA,
    SITE_FILE_LIMITS,
    KeyringError,
    SitePublicKeys,
    check_site_name,
)


@dataclass(frozen=True)
class SiteCredentials:
    site_name: str
    signing_key: ed25519.Ed25519PrivateKey
    sealing_key: x25519.X25519PrivateKey
    coordinator_verify_key: ed25519.Ed25519PublicKey
    coordinator_seal_to: x25519.X25519PublicKey

    @property
    def coordinator_sealing_key_id(self) -> str:
        return keys.key_id(self.coordinator_seal_to)


def init_site(directory: Path, name: str, coordinator_public: Path | None = None, *, overwrite: bool = False) -> SitePublicKeys:
    """Create the site's three key pairs and `site.json`; copy the coordinator's public files if given.

    Every file is checked before any is written (`keys.check_writable`): with one that exists
    (without `overwrite`) or is a symbolic link, nothing is written.

    Raises:
        KeyringError: `name` is not a site name, or the coordinator's files are not readable.
        FileExistsError: a file exists (without `overwrite`), or a path is a symbolic link.
    """
    check_site_name(name)
    directory = Path(directory)
    bundle = _coordinator_files(coordinator_public) if coordinator_public is not None else {}
    node, signing, sealing = keys.new_node_key(), keys.new_signing_key(), keys.new_sealing_key()
    public = SitePublicKeys(
        name=name,
        signing_key_pem=keys.public_pem(signing.public_key()).decode(),
        sealing_key_pem=keys.public_pem(sealing.public_key()).decode(),
        node_key_openssh=keys.node_public_openssh(node.public_key()).decode().strip(),
    )
    secret = {"node.key": keys.node_key_openssh(node), "signing.key": keys.signing_key_pem(signing),
              "sealing.key": keys.sealing_key_pem(sealing)}
    shared = {"node.pub": keys.node_public_openssh(node.public_key(), name),
              "site.json": json.dumps(public.to_dict(), indent=2).encode()}
    for file_name in [*secret, *shared]:
        keys.check_writable(directory / file_name, overwrite=overwrite)
    for file_name in bundle:
        keys.check_writable(directory / file_name, overwrite=True)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the folder of private keys: only its owner lists it
    for file_name, data in secret.items():
        keys.write_secret(directory / file_name, data, overwrite=overwrite)
    for file_name, data in {**shared, **bundle}.items():
        keys.write_public(directory / file_name, data, overwrite=overwrite or file_name in bundle)
    return public


def trust_coordinator(directory: Path, coordinator_public: Path) -> None:
    """Copy `coordinator.json` and `ca.pem` from the coordinator's public folder into the site's.

    The copies replace earlier ones atomically and never through a symbolic link.

    Raises:
        KeyringError: the coordinator's files are not readable or not what they should be.
        FileExistsError: a copy's path in `directory` is a symbolic link.
    """
    files = _coordinator_files(coordinator_public)
    for file_name in files:
        keys.check_writable(Path(directory) / file_name, overwrite=True)
    for file_name, data in files.items():
        keys.write_public(Path(directory) / file_name, data, overwrite=True)


def _coordinator_files(coordinator_public: Path) -> dict[str, bytes]:
    """coordinator.json (checked) and, when beside it, ca.pem (checked to hold a certificate), by file name."""
    from cryptography import x509

    source = Path(coordinator_public)
    bundle = source / "coordinator.json" if source.is_dir() else source
    _read_coordinator_bundle(bundle)
    files = {"coordinator.json": _read_small(bundle)}
    ca = bundle.parent / "ca.pem"
    if ca.is_file():
        files["ca.pem"] = _read_small(ca)
        try:
            x509.load_pem_x509_certificates(files["ca.pem"])
        except ValueError:
            raise KeyringError(f"{ca} is not a PEM certificate") from None
    return files


def _read_small(path: Path) -> bytes:
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(SITE_FILE_LIMITS.max_bytes + 1)
    except OSError as exc:
        raise KeyringError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > SITE_FILE_LIMITS.max_bytes:
        raise KeyringError(f"{path} is larger than {SITE_FILE_LIMITS.max_bytes} bytes: not a coordinator's public file")
    return data


def _read_coordinator_bundle(path: Path) -> tuple[ed25519.Ed25519PublicKey, x25519.X25519PublicKey]:
    """The coordinator's verify and seal-to keys from its coordinator.json, through the bounded loader."""
    try:
        data = read_json_file(path, limits=SITE_FILE_LIMITS)
    except JSONInputError as exc:
        raise KeyringError(f"cannot read the coordinator's public keys {exc}") from None
    if not isinstance(data, dict) or data.get("format") != COORDINATOR_FORMAT:
        raise KeyringError(f"{path} is not a coordinator.json (format {COORDINATOR_FORMAT})")
    try:
        check_schema(data, COORDINATOR_SCHEMA, str(path))
        return (keys.verify_key_from_pem(data["signing_key"].encode(), f"{path} signing_key"),
                keys.seal_to_key_from_pem(data["sealing_key"].encode(), f"{path} sealing_key"))
    except (JSONInputError, keys.KeyFileError) as exc:
        raise KeyringError(str(exc)) from None


def load_site_credentials(directory: Path) -> SiteCredentials:
    directory = Path(directory)
    if not (directory / "site.json").is_file():
        raise KeyringError(f"{directory} is not a site key folder (create it with `fedkr site init`)")
    try:
        data = read_json_file(directory / "site.json", limits=SITE_FILE_LIMITS)
    except JSONInputError as exc:
        raise KeyringError(f"cannot read the site file {exc}") from None
    public = SitePublicKeys.from_dict(data, str(directory / "site.json"))
    bundle = directory / "coordinator.json"
    if not bundle.is_file():
        raise KeyringError(f"{bundle} not found: copy the coordinator's public/coordinator.json there "
                           f"(or run `fedkr site init --coordinator PUBLIC_DIR`)")
    verify, seal_to = _read_coordinator_bundle(bundle)
    return SiteCredentials(public.name, keys.load_signing_key(directory / "signing.key"),
                           keys.load_sealing_key(directory / "sealing.key"), verify, seal_to)
