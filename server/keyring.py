"""The coordinator's key folder: its CA, TLS certificate, signing and sealing keys, and the site registry.

Layout of `fedkr coordinator init DIR` (private files 0600):

    ca.pem  ca.key            the consortium CA (sites and researchers trust ca.pem)
    server.pem  server.key    TLS certificate of the SuperLink and the release service
    signing.key               Ed25519: signs releases and audit candidates
    sealing.key               X25519: sites seal their shards to it
    sites.json                registered sites: name -> public keys and Flower node id
    public/                   what to hand to sites and researchers: ca.pem, coordinator.json, signing.pub

A site is trusted only once it is in `sites.json`; its shards must be signed by the key recorded
there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from fedkr.shared import keys, pki
from fedkr.shared.site_identity import COORDINATOR_FORMAT, KeyringError, SitePublicKeys

@dataclass
class CoordinatorKeys:
    """The coordinator's private keys and the sites it trusts, loaded once per run."""

    directory: Path
    signing_key: ed25519.Ed25519PrivateKey
    sealing_key: x25519.X25519PrivateKey
    sites: dict[str, SitePublicKeys] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)  # the Flower node each site registered

    @property
    def site_verify_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        return {name: site.verify_key for name, site in self.sites.items()}


def init_coordinator(directory: Path, hosts: list[str], *, overwrite: bool = False) -> dict[str, Path]:
    """Create the CA, the server certificate and the two key pairs; return where each went."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the folder of private keys: only its owner lists it
    ca_cert, ca_key = pki.new_ca()
    keys.write_public(directory / "ca.pem", ca_cert, overwrite=overwrite)
    keys.write_secret(directory / "ca.key", ca_key, overwrite=overwrite)
    cert_path, key_path = pki.write_server_certificate(directory, "server", pki.new_server_certificate(ca_cert, ca_key, hosts), overwrite=overwrite)
    signing, sealing = keys.new_signing_key(), keys.new_sealing_key()
    keys.write_secret(directory / "signing.key", keys.signing_key_pem(signing), overwrite=overwrite)
    keys.write_secret(directory / "sealing.key", keys.sealing_key_pem(sealing), overwrite=overwrite)
    public = directory / "public"
    keys.write_public(public / "ca.pem", ca_cert, overwrite=overwrite)
    keys.write_public(public / "signing.pub", keys.public_pem(signing.public_key()), overwrite=overwrite)
    bundle = {
        "format": COORDINATOR_FORMAT,
        "signing_key": keys.public_pem(signing.public_key()).decode(),
        "signing_key_id": keys.key_id(signing.public_key()),
        "sealing_key": keys.public_pem(sealing.public_key()).decode(),
        "sealing_key_id": keys.key_id(sealing.public_key()),
    }
    keys.write_public(public / "coordinator.json", json.dumps(bundle, indent=2).encode(), overwrite=overwrite)
    registry = directory / "sites.json"
    if not registry.exists():
        registry.write_text(json.dumps({"sites": {}}, indent=2))
    return {"ca": directory / "ca.pem", "certificate": cert_path, "certificate_key": key_path,
            "signing_key": directory / "signing.key", "sealing_key": directory / "sealing.key", "public": public}


def load_coordinator_keys(directory: Path) -> CoordinatorKeys:
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyringError(f"coordinator key folder {directory} not found (create it with `fedkr coordinator init`)")
    return CoordinatorKeys(
        directory=directory,
        signing_key=keys.load_signing_key(directory / "signing.key"),
        sealing_key=keys.load_sealing_key(directory / "sealing.key"),
        sites=read_registry(directory),
        node_ids={name: int(e["node_id"]) for name, e in registry_entries(directory).items()
                  if isinstance(e, dict) and isinstance(e.get("node_id"), int)},
    )


def read_registry(directory: Path) -> dict[str, SitePublicKeys]:
    path = Path(directory) / "sites.json"
    if not path.is_file():
        return {}
    entries = registry_entries(directory)
    return {name: SitePublicKeys.from_dict(entry, f"{path} entry {name!r}") for name, entry in entries.items()}


def registry_entries(directory: Path) -> dict[str, dict]:
    """The registry as stored, with node ids and times, for `fedkr coordinator sites`."""
    path = Path(directory) / "sites.json"
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text()).get("sites", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError) as exc:
        raise KeyringError(f"{path} is not a site registry: {exc.__class__.__name__}") from None
    if not isinstance(entries, dict):
        raise KeyringError(f"{path} is not a site registry: 'sites' must map names to entries")
    return entries


def record_site(directory: Path, site: SitePublicKeys, node_id: int | None) -> None:
    """Add or replace a site in the registry (a replaced entry is a key rotation)."""
    path = Path(directory) / "sites.json"
    data = json.loads(path.read_text()) if path.is_file() else {"sites": {}}
    previous = data["sites"].get(site.name)
    entry = {**site.to_dict(), "node_id": node_id, "registered": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if previous:
        entry["replaces_signing_key_id"] = keys.key_id(SitePublicKeys.from_dict(previous).verify_key)
    data["sites"][site.name] = entry
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def read_site_file(path: Path) -> SitePublicKeys:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyringError(f"cannot read site file {path}: {exc}") from None
    return SitePublicKeys.from_dict(data, str(path))
