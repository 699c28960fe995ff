from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListReleasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseSummary(_message.Message):
    __slots__ = ("release_id", "created", "classes", "ipc", "audit_passed", "signing_key_id", "file_count", "total_bytes", "fedkr_version")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    IPC_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PASSED_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FEDKR_VERSION_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    created: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    ipc: int
    audit_passed: bool
    signing_key_id: str
    file_count: int
    total_bytes: int
    fedkr_version: str
    def __init__(self, release_id: _Optional[str] = ..., created: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., ipc: _Optional[int] = ..., audit_passed: _Optional[bool] = ..., signing_key_id: _Optional[str] = ..., file_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., fedkr_version: _Optional[str] = ...) -> None: ...

class ListReleasesResponse(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseSummary]
    def __init__(self, releases: _Optional[_Iterable[_Union[ReleaseSummary, _Mapping]]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("release_id",)
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    def __init__(self, release_id: _Optional[str] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("release_id", "manifest_json", "manifest_signature")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    manifest_json: bytes
    manifest_signature: bytes
    def __init__(self, release_id: _Optional[str] = ..., manifest_json: _Optional[bytes] = ..., manifest_signature: _Optional[bytes] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("release_id", "file_name")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    file_name: str
    def __init__(self, release_id: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class DownloadDigest(_message.Message):
    __slots__ = ("sha256", "total_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    total_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class DownloadChunk(_message.Message):
    __slots__ = ("offset", "data", "digest")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    digest: DownloadDigest
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., digest: _Optional[_Union[DownloadDigest, _Mapping]] = ...) -> None: ...

class GetAuditReportRequest(_message.Message):
    __slots__ = ("release_id",)
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    def __init__(self, release_id: _Optional[str] = ...) -> None: ...

class GetAuditReportResponse(_message.Message):
    __slots__ = ("release_id", "file_name", "report_json", "sha256", "passed")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    file_name: str
    report_json: bytes
    sha256: str
    passed: bool
    def __init__(self, release_id: _Optional[str] = ..., file_name: _Optional[str] = ..., report_json: _Optional[bytes] = ..., sha256: _Optional[str] = ..., passed: _Optional[bool] = ...) -> None: ...
