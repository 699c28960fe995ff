"""Who a site is, in public: the keys it hands the coordinator, and the name it goes by.

Shared by the coordinator's registry and the site's key folder, so both read `site.json` alike.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from . import keys
from .json_input import JSONInputError, Limits, check_schema

COORDINATOR_FORMAT = "fedkr.coordinator/1"
SITE_FORMAT = "fedkr.site/1"
#: A site name, matched against the whole string: ASCII letters, digits, '.', '_', '-'; 1 to 64 of them.
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: What a site file or a coordinator's public bundle may cost to read: a few PEM keys.
SITE_FILE_LIMITS = Limits(max_bytes=64 * 1024, max_depth=4)
_PEM = {"type": "string", "maxLength": 8192}
#: JSON Schema of site.json (and of each registry entry, which adds the coordinator's record).
SITE_SCHEMA = {
    "type": "object",
    "required": ["format", "name", "signing_key", "sealing_key", "node_key"],
    "properties": {"format": {"const": SITE_FORMAT}, "name": {"type": "string"},
                   "signing_key": _PEM, "sealing_key": _PEM, "node_key": _PEM},
}
#: JSON Schema of the coordinator's public bundle, coordinator.json.
COORDINATOR_SCHEMA = {
    "type": "object",
    "required": ["format", "signing_key", "sealing_key"],
    "properties": {"format": {"const": COORDINATOR_FORMAT}, "signing_key": _PEM, "sealing_key": _PEM},
}


class KeyringError(ValueError):
    """A key folder or site file that is missing or malformed; the message says which and why."""


@dataclass(frozen=True)
class SitePublicKeys:
    """What a site hands the coordinator (`site.json`): nothing secret."""

    name: str
    signing_key_pem: str
    sealing_key_pem: str
    node_key_openssh: str

    @property
    def verify_key(self) -> ed25519.Ed25519PublicKey:
        return keys.verify_key_from_pem(self.signing_key_pem.encode(), f"site {self.name} signing key")

    @property
    def seal_to(self) -> x25519.X25519PublicKey:
        return keys.seal_to_key_from_pem(self.sealing_key_pem.encode(), f"site {self.name} sealing key")

    def to_dict(self) -> dict:
        return {"format": SITE_FORMAT, "name": self.name, "signing_key": self.signing_key_pem,
                "sealing_key": self.sealing_key_pem, "node_key": self.node_key_openssh}

    @classmethod
    def from_dict(cls, data: object, where: str = "site file") -> SitePublicKeys:
        """The site in `data` (a parsed site.json or registry entry), checked against `SITE_SCHEMA`, its name
        (`check_site_name`) and its keys; `KeyringError` names `where` and the first problem."""
        if not isinstance(data, dict) or data.get("format") != SITE_FORMAT:
            raise KeyringError(f"{where} is not a fedkr site file (format {SITE_FORMAT})")
        try:
            check_schema(data, SITE_SCHEMA, where)
        except JSONInputError as exc:
            raise KeyringError(str(exc)) from None
        site = cls(data["name"], data["signing_key"], data["sealing_key"], data["node_key"].strip())
        check_site_name(site.name)
        try:
            site.verify_key, site.seal_to  # noqa: B018 - parse both keys now so a bad file fails here
        except keys.KeyFileError as exc:
            raise KeyringError(f"{where}: {exc}") from None
        return site


def check_site_name(name: object) -> str:
    """`name` if it is a site name, else `KeyringError`: the one check every site name passes where it enters.

    A site name is 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit; the
    whole string must match, so `"hospital-a\\n"` or `" hospital-a"` is refused, not trimmed.
    """
    if not isinstance(name, str) or SITE_NAME.fullmatch(name) is None:
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
        raise KeyringError(f"site name {shown} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def site_name_key(name: str) -> str:
    """The form in which two site names are compared: Unicode NFKC, then case-folded.

    Names that differ only in case (`Hospital-A`, `hospital-a`) are one site: a registry or a run
    never holds both.
    """
    return unicodedata.normalize("NFKC", name).casefold()
