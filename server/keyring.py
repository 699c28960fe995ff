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
from fedkr.shared.json_input import JSONInputError, Limits, read_json_file
from fedkr.shared.site_identity import (
    COORDINATOR_FORMAT,
    SITE_FILE_LIMITS,
    KeyringError,
    SitePublicKeys,
    check_site_name,
    site_name_key,
)

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
    """Create the CA, the server certificate and the two key pairs; return where each went.

    Every file is checked before any is written (`keys.check_writable`): an existing one without
    `overwrite`, or a symbolic link at any of them or at `public/`, and nothing is written at all.

    Raises:
        FileExistsError: a file exists (without `overwrite`), or a path is a symbolic link.
    """
    directory = Path(directory)
    public = directory / "public"
    registry = directory / "sites.json"
    if public.is_symlink():
        raise FileExistsError(f"{public} is a symbolic link; refusing to write the public files through it (remove the link)")
    ca_cert, ca_key = pki.new_ca()
    server = pki.new_server_certificate(ca_cert, ca_key, hosts)
    signing, sealing = keys.new_signing_key(), keys.new_sealing_key()
    bundle = {
        "format": COORDINATOR_FORMAT,
        "signing_key": keys.public_pem(signing.public_key()).decode(),
        "signing_key_id": keys.key_id(signing.public_key()),
        "sealing_key": keys.public_pem(sealing.public_key()).decode(),
        "sealing_key_id": keys.key_id(sealing.public_key()),
    }
    secret = {directory / "ca.key": ca_key, directory / "server.key": server.key_pem,
              directory / "signing.key": keys.signing_key_pem(signing), directory / "sealing.key": keys.sealing_key_pem(sealing)}
    shared = {directory / "ca.pem": ca_cert, directory / "server.pem": server.cert_pem, public / "ca.pem": ca_cert,
              public / "signing.pub": keys.public_pem(signing.public_key()),
              public / "coordinator.json": json.dumps(bundle, indent=2).encode()}
    new_registry = not registry.exists() and not registry.is_symlink()
    for path in [*secret, *shared, *([registry] if new_registry else [])]:
        keys.check_writable(path, overwrite=overwrite and path != registry)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the folder of private keys: only its owner lists it
    for path, data in secret.items():
        keys.write_secret(path, data, overwrite=overwrite)
    for path, data in shared.items():
        keys.write_public(path, data, overwrite=overwrite)
    if new_registry:
        keys.write_public(registry, json.dumps({"sites": {}}, indent=2).encode())
    return {"ca": directory / "ca.pem", "certificate": directory / "server.pem", "certificate_key": directory / "server.key",
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


#: JSON Schema of sites.json: site name -> the site's public keys (checked by `SitePublicKeys.from_dict`) and its record.
REGISTRY_SCHEMA = {
    "type": "object",
    "required": ["sites"],
    "properties": {"sites": {"type": "object", "maxProperties": 10_000, "additionalProperties": {
        "type": "object",
        "properties": {"node_id": {"type": ["integer", "null"]}, "registered": {"type": "string", "maxLength": 64}},
    }}},
}


def read_registry(directory: Path) -> dict[str, SitePublicKeys]:
    """The registered sites by name, each entry checked as a site file and filed under its own name."""
    path = Path(directory) / "sites.json"
    if not path.is_file():
        return {}
    entries = registry_entries(directory)
    sites = {name: SitePublicKeys.from_dict(entry, f"{path} entry {name[:80]!r}") for name, entry in entries.items()}
    for name, site in sites.items():
        if site.name != name:
            raise KeyringError(f"{path}: the entry filed as {name[:80]!r} names the site {site.name!r}")
    return sites


def registry_entries(directory: Path) -> dict[str, dict]:
    """The registry as stored, with node ids and times, for `fedkr coordinator sites`.

    Raises:
        KeyringError: sites.json is not a registry (`REGISTRY_SCHEMA`, through the bounded loader),
            or it files two names that are one site (`site_name_key`).
    """
    path = Path(directory) / "sites.json"
    if not path.is_file():
        return {}
    try:
        entries = read_json_file(path, schema=REGISTRY_SCHEMA, limits=Limits(max_bytes=64 * 2**20))["sites"]
    except JSONInputError as exc:
        raise KeyringError(f"{exc.where} is not a site registry: {exc.detail}") from None
    seen: dict[str, str] = {}
    for name in entries:
        try:
            check_site_name(name)
        except KeyringError as exc:
            raise KeyringError(f"{path}: {exc}") from None
        other = seen.setdefault(site_name_key(name), name)
        if other != name:
            raise KeyringError(f"{path} files {other!r} and {name!r}, which name one site: keep one of them")
    return entries


def check_unregistered_spelling(entries: dict[str, dict], name: str) -> None:
    """Raise `KeyringError` if the registry `entries` hold `name` under another spelling (`site_name_key`)."""
    same = [other for other in entries if site_name_key(other) == site_name_key(name) and other != name]
    if same:
        raise KeyringError(f"site {name!r} is already registered as {same[0]!r}: a site has one name "
                           f"(names are compared without regard to case)")


def record_site(directory: Path, site: SitePublicKeys, node_id: int | None) -> None:
    """Add or replace a site in the registry (a replaced entry is a key rotation).

    Raises:
        KeyringError: another registered name is the same site's name in another case (`site_name_key`).
        FileExistsError: sites.json is a symbolic link (`keys.write_file_atomic`).
    """
    path = Path(directory) / "sites.json"
    sites = registry_entries(directory)
    check_unregistered_spelling(sites, site.name)
    previous = sites.get(site.name)
    entry = {**site.to_dict(), "node_id": node_id, "registered": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if previous:
        entry["replaces_signing_key_id"] = keys.key_id(SitePublicKeys.from_dict(previous).verify_key)
    sites[site.name] = entry
    keys.write_public(path, json.dumps({"sites": sites}, indent=2).encode(), overwrite=True)


def read_site_file(path: Path) -> SitePublicKeys:
    """The site file (`site.json`) a site operator sent, through the bounded loader; `KeyringError` if it is not one."""
    try:
        data = read_json_file(path, limits=SITE_FILE_LIMITS)
    except JSONInputError as exc:
        raise KeyringError(f"cannot read site file {exc}") from None
    return SitePublicKeys.from_dict(data, str(path))
