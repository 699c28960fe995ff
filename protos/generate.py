"""Regenerate the Python modules of every .proto under protos/ into fedkr/v1/ (checked in).

Run from the repository root after changing a .proto:

    python protos/generate.py

Needs grpcio-tools (the `dev` extra). `tests/test_protos.py` fails when a checked-in module no
longer matches its .proto.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write `<name>_pb2.py` (and `_pb2_grpc.py` where a service is defined) under `out_dir`."""
    from grpc_tools import protoc

    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for grpc_module in out_dir.rglob("*_pb2_grpc.py"):
        text = grpc_module.read_text()
        if "class " not in text.split("GRPC_GENERATED_VERSION", 1)[-1]:
            grpc_module.unlink()  # no service in that file: keep the tree free of empty stubs


if __name__ == "__main__":
    generate(ROOT)
    print("regenerated:", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fedkr" / "v1").glob("*_pb2*.py*")), sep="\n  ", file=sys.stderr)
