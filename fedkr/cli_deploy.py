"""`fedkr coordinator init|register-site|sites` and `fedkr site init|trust|ledger`: keys, registry, ledger."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fedkr.cli_common import fail as _fail
from fedkr.cli_common import out_console, printable, wide_console
from fedkr.shared.json_input import JSONInputError, parse_json


def coordinator_init(
    directory: Annotated[Path, typer.Argument(help="Folder for the coordinator's CA, certificate and keys.")],
    host: Annotated[list[str], typer.Option("--host", help="A name or address sites dial (repeat for several); localhost and 127.0.0.1 are always added.")] = [],  # noqa: B006
    force: Annotated[bool, typer.Option(help="Replace existing keys (key rotation: every site must trust the new public folder).")] = False,
) -> None:
    """Create the consortium CA, the SuperLink's TLS certificate, and the coordinator's signing and sealing keys."""
    from fedkr.server.keyring import init_coordinator
    from fedkr.shared.pki import certificate_names

    try:
        made = init_coordinator(directory, host, overwrite=force)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    names = ", ".join(certificate_names(made["certificate"].read_bytes()))
    out_console.print(f"coordinator keys in {directory} (private files are mode 600)")
    out_console.print(f"  TLS certificate {made['certificate']} valid for: {names}")
    out_console.print(f"  hand to every site and researcher: {made['public']}/ (ca.pem, coordinator.json, signing.pub)")
    out_console.print("start the SuperLink with:")
    out_console.print(f"  flower-superlink --ssl-ca-certfile {made['ca']} --ssl-certfile {made['certificate']} "
                      f"--ssl-keyfile {made['certificate_key']} --enable-supernode-auth --host 0.0.0.0 --port 9093 "
                      f"--database /var/lib/fedkr/superlink.db --disable-runtime-dependency-installation", soft_wrap=True)


def coordinator_register_site(
    directory: Annotated[Path, typer.Argument(help="The coordinator's key folder.")],
    site_file: Annotated[Path, typer.Argument(help="The site.json the site operator sent.")],
    connection: Annotated[str, typer.Option(help="The `flwr` SuperLink connection to register the node with (flwr's default if empty).")] = "",
    flower: Annotated[bool, typer.Option(help="Register the node key with the running SuperLink (`flwr supernode register`).")] = True,
) -> None:
    """Trust a site: register its SuperNode key with the SuperLink and record its signing and sealing keys."""
    from fedkr.server.keyring import (
        KeyringError,
        check_unregistered_spelling,
        read_site_file,
        record_site,
        registry_entries,
    )

    try:
        site = read_site_file(site_file)
        entries = registry_entries(directory)
        check_unregistered_spelling(entries, site.name)  # before the SuperLink hears of it
        previous = entries.get(site.name)
    except KeyringError as exc:
        _fail(str(exc))
    node_id = previous.get("node_id") if previous and previous.get("node_key") == site.node_key_openssh else None
    if flower and (node_id is None or node_id not in _listed_nodes(connection)):
        if previous and previous.get("node_id") and previous.get("node_id") != node_id:
            _flwr(["supernode", "unregister", str(previous["node_id"])], connection, ok_fail=True)  # a rotated key
        node_id = _register_node(site.node_key_openssh, site.name, connection)
    try:
        record_site(directory, site, node_id)
    except (KeyringError, OSError) as exc:
        _fail(str(exc))
    out_console.print(f"site {site.name} registered" + (f" (Flower node {node_id})" if node_id else " (keys only)"))


def _flwr(args: list[str], connection: str, ok_fail: bool = False) -> dict:
    """Run a `flwr` command with `--format json` and return what it printed as JSON ({} if none)."""
    exe = shutil.which("flwr")
    if exe is None:
        _fail("the `flwr` command is not on PATH (install fedkr's environment, or pass --no-flower)")
    cmd = [exe, *args, *([connection] if connection else []), "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and not ok_fail:
        detail = (done.stdout + done.stderr).strip().splitlines()
        _fail(f"`flwr {' '.join(args[:2])}` failed: {detail[-1] if detail else done.returncode}")
    start = done.stdout.find("{")  # flwr may print a line about the connection first
    try:
        parsed = parse_json(done.stdout[start:], where=f"`flwr {' '.join(args[:2])}`") if start >= 0 else {}
    except JSONInputError:
        parsed = {}
    return parsed if isinstance(parsed, dict) else {}


def _listed_nodes(connection: str) -> set[int]:
    """The node ids the SuperLink knows: a registry entry may predate this SuperLink's database."""
    try:
        return {int(node["node-id"]) for node in _flwr(["supernode", "list"], connection).get("nodes", [])}
    except (ValueError, KeyError, TypeError):
        return set()


def _register_node(node_key: str, name: str, connection: str) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pub = Path(tmp) / "node.pub"
        pub.write_text(node_key + "\n")
        out = _flwr(["supernode", "register", str(pub), "--name", name], connection)
    try:
        return int(out["node-id"])
    except (ValueError, KeyError, TypeError):
        _fail(f"`flwr supernode register` gave no node id: {str(out)[-200:]}")
    raise AssertionError("unreachable")


def coordinator_sites(directory: Annotated[Path, typer.Argument(help="The coordinator's key folder.")]) -> None:
    """List the registered sites with their key fingerprints and Flower node ids."""
    from fedkr.server.keyring import read_registry, registry_entries
    from fedkr.shared.keys import key_id
    from fedkr.shared.site_identity import KeyringError

    try:
        entries, sites = registry_entries(directory), read_registry(directory)
    except KeyringError as exc:
        _fail(str(exc))
    table = Table("site", "node id", "signing key", "sealing key", "registered")
    for name, site in sites.items():
        table.add_row(name, str(entries[name].get("node_id") or "-"), key_id(site.verify_key), key_id(site.seal_to),
                      str(entries[name].get("registered", "")))
    wide_console(150).print(table if entries else "no site registered yet")


def site_init(
    directory: Annotated[Path, typer.Argument(help="Folder for the site's keys (keep it on the site's host only).")],
    name: Annotated[str, typer.Option(help="The site's name in reports, the registry and the ledger.")],
    coordinator: Annotated[Path | None, typer.Option(help="The coordinator's public/ folder (or its coordinator.json) to trust.")] = None,
    force: Annotated[bool, typer.Option(help="Replace existing keys (key rotation: re-register with the coordinator).")] = False,
) -> None:
    """Create the site's SuperNode authentication key, signing key and sealing key; print the public parts."""
    from fedkr.client.credentials import init_site
    from fedkr.shared.keys import key_id
    from fedkr.shared.site_identity import KeyringError

    try:
        public = init_site(directory, name, coordinator, overwrite=force)
    except (OSError, KeyringError) as exc:
        _fail(str(exc))
    out_console.print(f"site {name}: keys in {directory} (private files are mode 600)")
    out_console.print(f"  send {directory / 'site.json'} to the coordinator operator; it holds only public keys:")
    out_console.print(f"    node key     {public.node_key_openssh}", soft_wrap=True)
    out_console.print(f"    signing key  {key_id(public.verify_key)}")
    out_console.print(f"    sealing key  {key_id(public.seal_to)}")
    if coordinator is None:
        out_console.print(f"  then trust the coordinator: fedkr site trust {directory} COORDINATOR_PUBLIC_DIR")


def site_trust(
    directory: Annotated[Path, typer.Argument(help="The site's key folder.")],
    coordinator: Annotated[Path, typer.Argument(help="The coordinator's public/ folder or its coordinator.json.")],
) -> None:
    """Trust a coordinator: copy its public keys and CA certificate into the site's key folder."""
    from fedkr.client.credentials import trust_coordinator
    from fedkr.shared.site_identity import KeyringError

    try:
        trust_coordinator(directory, coordinator)
    except (KeyringError, OSError) as exc:
        _fail(str(exc))
    out_console.print(f"{directory} now trusts the coordinator in {coordinator}")


def site_ledger(
    state_dir: Annotated[Path, typer.Option(help="The site's state folder (the SuperNode's `state-dir`).")],
    run: Annotated[str, typer.Option(help="Only this run id.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, as stored.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check the ledger's hash chain instead: every line holds the hash of the one before. Exit 1 if it is broken.")] = False,
) -> None:
    """Show every item that left this site: time, run, round, kind, size, SHA-256, recipient, and the keys that sealed and signed it."""
    from fedkr.client.ledger import read_ledger, verify_ledger

    path = state_dir / "ledger.jsonl"
    if not path.is_file():
        _fail(f"no ledger at {path}: nothing has left this site from that state folder")
    try:
        if verify:
            check = verify_ledger(path)
        else:
            entries, skipped = read_ledger(path)
    except OSError as exc:
        _fail(f"cannot read the ledger {path}: {exc.strerror}")
    if verify:
        for problem in check.problems:
            out_console.print(Text.assemble(("  FAIL  ", "bold red"), printable(problem)))
        if not check.ok:
            _fail(f"{path}: the hash chain is broken ({len(check.problems)} problem(s) in {check.lines} line(s))", 1)
        out_console.print(f"{path}: {check.lines} line(s), hash chain intact")
        out_console.print(f"  head sha256 {check.head} (record it elsewhere: a later check against it shows lines cut from the end or rewritten)")
        return
    entries = [e for e in entries if not run or e.get("run") == run]
    if as_json:
        for entry in entries:
            print(json.dumps(entry))
        return
    table = Table("time", "run", "round", "kind", "images", "bytes", "sha256", "recipient", "sealed to", "signed by",
                  title=str(path))
    for e in entries:
        cells = (e.get("time"), e.get("run"), e.get("round"), e.get("kind"), e.get("images", ""), _size(e.get("bytes")),
                 str(e.get("sha256", ""))[:16], e.get("recipient"), e.get("sealed_to", "-"), e.get("signed_by", "-"))
        table.add_row(*(str(c) for c in cells))
    wide_console(190).print(table)
    total = sum(b for b in (e.get("bytes") for e in entries) if isinstance(b, int))
    out_console.print(f"{len(entries)} item(s), {total:,} bytes in all" + (f"; {skipped} unreadable line(s) skipped" if skipped else ""))


def _size(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def register(app: typer.Typer, coordinator_app: typer.Typer, site_app: typer.Typer) -> None:
    """Attach this module's commands to the `fedkr` command groups."""
    coordinator_app.command("init")(coordinator_init)
    coordinator_app.command("register-site")(coordinator_register_site)
    coordinator_app.command("sites")(coordinator_sites)
    site_app.command("init")(site_init)
    site_app.command("trust")(site_trust)
    site_app.command("ledger")(site_ledger)
