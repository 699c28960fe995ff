"""Who a site is, in public: the keys it hands the coordinator, and the name it goes by.

Shared by the coordinator's registry and the site's key folder, so both read `site.json` alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from . import keys

COORDINATOR_FORMAT = "fedkr.coordinator/1"
SITE_FORMAT = "fedkr.site/1"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
        if not isinstance(data, dict) or data.get("format") != SITE_FORMAT:
            raise KeyringError(f"{where} is not a fedkr site file (format {SITE_FORMAT})")
        try:
            site = cls(str(data["name"]), str(data["signing_key"]), str(data["sealing_key"]), str(data["node_key"]).strip())
        except KeyError as exc:
            raise KeyringError(f"{where} lacks {exc}") from None
        check_site_name(site.name)
        site.verify_key, site.seal_to  # noqa: B018 - parse both keys now so a bad file fails here
        return site


def check_site_name(name: str) -> str:
    if not SITE_NAME.match(name):
        raise KeyringError(f"site name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name
