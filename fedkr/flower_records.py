"""The Flower record form of fedkr's messages, shared by the two Flower apps and nothing else.

Every message is already bytes (`shared/codec.py`, signed or sealed in deployment), so a record
is those bytes as one flat uint8 array in an `ArrayRecord`, which Flower chunks in transit like any
other array. Flower is imported only here, in `client/flower_app.py`, `server/flower_app.py`,
`fedkr/simulation.py` and `fedkr/bench_fedavg.py`.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

MSG_TRAIN = "train"
MSG_SYNTHESIZE = "query.synthesize"
MSG_AUDIT = "query.audit"
MSG_RELABEL = "query.relabel"

#: The record and array that hold a message's bytes.
RECORD = "fedkr"
ARRAY = "message"
#: The largest message either app reads (a candidate holds the student's weights and the released images).
MAX_MESSAGE_BYTES = 256 * 2**20


def to_record(data: bytes) -> RecordDict:
    """A `RecordDict` holding `data` as one flat uint8 array."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"a record holds a message's bytes, not {type(data).__name__}")
    return RecordDict({RECORD: ArrayRecord({ARRAY: Array(np.frombuffer(bytes(data), dtype=np.uint8).copy())})})


def from_record(content: RecordDict, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """The message bytes a `RecordDict` holds, exactly as `to_record` took them.

    The array's declared type and size are checked before numpy parses a single byte of it; anything
    else raises `ValueError` with a one-line reason.
    """
    try:
        array = content.array_records[RECORD][ARRAY]
    except (KeyError, TypeError, AttributeError):
        raise ValueError("message has no fedkr record") from None
    shape = tuple(array.shape)
    if array.stype != "numpy.ndarray" or array.dtype != "uint8" or len(shape) != 1:
        raise ValueError("a fedkr record must hold a flat uint8 array")
    if shape[0] > max_bytes or len(array.data) > max_bytes + 4096:
        raise ValueError(f"message is larger than {max_bytes} bytes")
    try:
        blob = array.numpy()
    except Exception as exc:  # noqa: BLE001 - a remote party's bytes: whatever numpy raises is "malformed"
        raise ValueError(f"malformed fedkr record ({type(exc).__name__})") from None
    if blob.dtype != np.uint8 or blob.shape != shape:
        raise ValueError("a fedkr record does not hold what it declares")
    return blob.tobytes()
