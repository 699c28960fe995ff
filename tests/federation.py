"""A real federation on loopback for tests: a SuperLink with TLS and SuperNode authentication,
SuperNodes as separate processes, the `flwr` CLI, and fedkr's own key commands, as operators run them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
BIN = Path(sys.executable).parent
CONNECTION = "fedkr-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def write_site_datasets(directory: Path, sites: int, seed: int = 0) -> list[Path]:
    """Split scikit-learn's digits training part into one MedMNIST-style file per site."""
    from fedkr.shared.data import load_digits_splits

    train = load_digits_splits(seed=seed).train
    order = np.random.default_rng(seed).permutation(len(train))
    paths = []
    for i, part in enumerate(np.array_split(order, sites)):
        path = directory / f"digits_site{i + 1}.npz"
        np.savez(path, train_images=train.images[part][..., 0], train_labels=train.labels[part])
        paths.append(path)
    return paths


@dataclass
class Federation:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def coordinator_dir(self) -> Path:
        return self.root / "coordinator"

    @property
    def database(self) -> Path:
        return self.root / "superlink.db"

    def site_dir(self, name: str) -> Path:
        return self.root / "sites" / name

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=self.env, timeout=timeout, cwd=self.root)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def start_superlink(self) -> None:
        self.port = free_port()
        flwr_home = self.root / "flwr-home"
        flwr_home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "FLWR_HOME": str(flwr_home), "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_DEDUP_LOGS": "0"}
        (flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.coordinator_dir / "public" / "ca.pem"}"\n'
        )
        c = self.coordinator_dir
        self._spawn("superlink", ["flower-superlink", "--ssl-ca-certfile", str(c / "ca.pem"), "--ssl-certfile", str(c / "server.pem"),
                                  "--ssl-keyfile", str(c / "server.key"), "--enable-supernode-auth", "--database", str(self.database),
                                  "--disable-runtime-dependency-installation", "--port", str(self.port)])
        wait_for_port(self.port)

    def start_supernode(self, name: str, data: Path, *, max_retries: int | None = None) -> subprocess.Popen:
        site = self.site_dir(name)
        node_config = f'data-path="{data}" keys-dir="{site}" state-dir="{self.root / "state" / name}" threads=1'
        args = ["flower-supernode", "--superlink", f"127.0.0.1:{self.port}", "--root-certificates", str(site / "ca.pem"),
                "--auth-supernode-private-key", str(site / "node.key"), "--node-config", node_config, "--port", str(free_port())]
        if max_retries is not None:
            args += ["--max-retries", str(max_retries), "--max-wait-time", "20"]
        return self._spawn(name, args)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("w")
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.root, start_new_session=True)
        self.processes[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything it started, as a crashed host would."""
        proc = self.processes.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.processes):
            proc = self.processes[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.processes.pop(name, None)

    def wait_online(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.cli("flwr", "supernode", "list", CONNECTION, check=False).stdout
            if out.count("online") >= count:
                return
            time.sleep(2)
        raise TimeoutError(f"fewer than {count} SuperNodes online after {timeout:.0f} s")
