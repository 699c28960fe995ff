"""The generated modules in fedkr/v1/ are checked in; they must match the .proto files they came from."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (test extra) compiles the .proto files")

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def compiled_descriptors(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    files = [str(p.relative_to(PROTO_ROOT)) for p in sorted(PROTO_ROOT.rglob("*.proto"))]
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}", *files]) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _without_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")  # protoc fills it in descriptor sets only, not in generated code
    for nested in message.nested_type:
        _without_json_names(nested)


def test_every_proto_has_a_matching_generated_module(tmp_path: Path) -> None:
    fresh = compiled_descriptors(tmp_path)
    assert fresh.file, "no .proto files found"
    for compiled in fresh.file:
        for message in compiled.message_type:
            _without_json_names(message)
        module_name = compiled.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        module = importlib.import_module(module_name)
        checked_in = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert checked_in == compiled, f"{module_name} is stale: run `python protos/generate.py`"
        for service in compiled.service:
            grpc_module = importlib.import_module(module_name + "_grpc")
            assert hasattr(grpc_module, f"{service.name}Stub"), f"{module_name}_grpc lacks {service.name}Stub"
            assert hasattr(grpc_module, f"add_{service.name}Servicer_to_server")
