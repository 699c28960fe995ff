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
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from fedkr.shared.site_identity import COORDINATOR_FORMAT, KeyringError, SitePublicKeys, check_site_name
from fedkr.shared import keys


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
    """Create the site's three key pairs and `site.json`; copy the coordinator's public files if given."""
    check_site_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the folder of private keys: only its owner lists it
    node, signing, sealing = keys.new_node_key(), keys.new_signing_key(), keys.new_sealing_key()
    keys.write_secret(directory / "node.key", keys.node_key_openssh(node), overwrite=overwrite)
    keys.write_public(directory / "node.pub", keys.node_public_openssh(node.public_key(), name), overwrite=overwrite)
    keys.write_secret(directory / "signing.key", keys.signing_key_pem(signing), overwrite=overwrite)
    keys.write_secret(directory / "sealing.key", keys.sealing_key_pem(sealing), overwrite=overwrite)
    public = SitePublicKeys(
        name=name,
        signing_key_pem=keys.public_pem(signing.public_key()).decode(),
        sealing_key_pem=keys.public_pem(sealing.public_key()).decode(),
        node_key_openssh=keys.node_public_openssh(node.public_key()).decode().strip(),
    )
    keys.write_public(directory / "site.json", json.dumps(public.to_dict(), indent=2).encode(), overwrite=overwrite)
    if coordinator_public is not None:
        trust_coordinator(directory, coordinator_public)
    return public


def trust_coordinator(directory: Path, coordinator_public: Path) -> None:
    """Copy `coordinator.json` and `ca.pem` from the coordinator's public folder into the site's."""
    source = Path(coordinator_public)
    bundle = source / "coordinator.json" if source.is_dir() else source
    _read_coordinator_bundle(bundle)
    shutil.copyfile(bundle, Path(directory) / "coordinator.json")
    ca = bundle.parent / "ca.pem"
    if ca.is_file():
        shutil.copyfile(ca, Path(directory) / "ca.pem")


def _read_coordinator_bundle(path: Path) -> tuple[ed25519.Ed25519PublicKey, x25519.X25519PublicKey]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyringError(f"cannot read the coordinator's public keys {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != COORDINATOR_FORMAT:
        raise KeyringError(f"{path} is not a coordinator.json (format {COORDINATOR_FORMAT})")
    return (keys.verify_key_from_pem(str(data.get("signing_key", "")).encode(), f"{path} signing_key"),
            keys.seal_to_key_from_pem(str(data.get("sealing_key", "")).encode(), f"{path} sealing_key"))


def load_site_credentials(directory: Path) -> SiteCredentials:
    directory = Path(directory)
    if not (directory / "site.json").is_file():
        raise KeyringError(f"{directory} is not a site key folder (create it with `fedkr site init`)")
    public = SitePublicKeys.from_dict(json.loads((directory / "site.json").read_text()), str(directory / "site.json"))
    bundle = directory / "coordinator.json"
    if not bundle.is_file():
        raise KeyringError(f"{bundle} not found: copy the coordinator's public/coordinator.json there "
                           f"(or run `fedkr site init --coordinator PUBLIC_DIR`)")
    verify, seal_to = _read_coordinator_bundle(bundle)
    return SiteCredentials(public.name, keys.load_signing_key(directory / "signing.key"),
                           keys.load_sealing_key(directory / "sealing.key"), verify, seal_to)
