"""DICOM files (PACS exports) into 8-bit pixels, with pydicom.

Only the attributes that describe the pixels are read (`PIXEL_TAGS`, pydicom's `specific_tags`):
patient, study and any other identifying attributes are never parsed, so they cannot reach a log,
a metric or the ledger.

Grayscale pixels (MONOCHROME1, MONOCHROME2) go through the modality transform (Rescale Slope and
Intercept, or a Modality LUT: pydicom's `apply_modality_lut`), then the first window the file
names (Window Center and Width, or its VOI LUT: `apply_voi_lut`), whose output range maps to
0..255. A file that names no window is shown over its own smallest to largest value (a full-range
window). MONOCHROME1 (where low values are white) is then inverted, so that every image reads as
MONOCHROME2. Colour pixels (RGB, YBR converted to RGB by pydicom, PALETTE COLOR through its
palette) are scaled from their bit depth to 0..255.

Multi-frame files and objects without pixel data (structured reports, presentation states, key
object selections) are skipped with a count. Compressed transfer syntaxes are decoded where an
installed pydicom decoder can (RLE always; JPEG and JPEG 2000 through Pillow; others with
pylibjpeg or GDCM) and refused by name where none can.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .image_decode import Decoded, SkippedFile, UnreadableFile, gray_or_rgb
from .image_set import DataError

#: Suffixes of DICOM files; files with any other suffix are DICOM too when they carry the "DICM" marker.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
#: The only attributes read from a file: what decodes and windows the pixels, and the instance's UID.
PIXEL_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "VOILUTSequence", "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
)
_PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(path: Path) -> bool:
    """By suffix, or by the "DICM" marker after the 128-byte preamble (PACS exports often have no suffix)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _dataset(path: Path, tags: tuple[str, ...]):  # type: ignore[no-untyped-def]
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():  # pydicom's warnings may quote element values
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, specific_tags=list(tags), force=path.suffix.lower() in DICOM_SUFFIXES)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise UnreadableFile(f"not a readable DICOM file ({exc.__class__.__name__})") from None


def sop_instance_uid(path: Path) -> str | None:
    """The file's SOP Instance UID (the only attribute read), None when it has none or is unreadable."""
    try:
        uid = _dataset(path, ("SOPInstanceUID",)).get("SOPInstanceUID")
    except UnreadableFile:
        return None
    return str(uid) if uid else None


def _check_decodable(ds, path: Path) -> None:  # type: ignore[no-untyped-def]
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        raise DataError(f"{path}: pixel data compressed as {syntax.name} ({syntax}), which no installed DICOM "
                        "decoder reads; install pylibjpeg with its plugins or GDCM (python-gdcm), or export uncompressed")


def _windowed(pixels: np.ndarray, ds) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Modality transform, then the named window (or the full range) to 0..255; MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0, prefer_lut=False)
        # the VOI transform is monotonic: its outputs at the ends of its input are the ends of its range
        low, high = (float(v) for v in apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0, prefer_lut=False))
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        scaled = 255.0 - scaled
    return scaled


def read_dicom(path: Path) -> Decoded:
    """A single-frame DICOM image as 8-bit pixels: (H, W) for grayscale, (H, W, 3) for colour.

    Raises:
        SkippedFile: "non-image" for an object without pixel data, "multi-frame" for several frames.
        UnreadableFile: for a file pydicom cannot parse or decode.
        DataError: for a compressed transfer syntax no installed decoder reads, naming it.
    """
    from pydicom.pixels import apply_color_lut

    ds = _dataset(path, PIXEL_TAGS)
    if not any(tag in ds for tag in _PIXEL_DATA):
        raise SkippedFile("non-image")
    if int(ds.get("NumberOfFrames") or 1) > 1:
        raise SkippedFile("multi-frame")
    _check_decodable(ds, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
            photometric = str(ds.get("PhotometricInterpretation", ""))
            if photometric in ("MONOCHROME1", "MONOCHROME2"):
                scaled = _windowed(pixels, ds)
            else:
                if photometric == "PALETTE COLOR":
                    pixels = apply_color_lut(pixels, ds)
                bits = 8 if pixels.dtype == np.uint8 else int(pixels.dtype.itemsize * 8 if photometric == "PALETTE COLOR"
                                                               else ds.get("BitsStored") or 8)
                scaled = pixels.astype(np.float64) * (255.0 / (2**bits - 1))
    except (AttributeError, KeyError, ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
        raise UnreadableFile(f"DICOM pixel data does not decode ({exc.__class__.__name__})") from None
    if scaled.ndim not in (2, 3) or (scaled.ndim == 3 and scaled.shape[-1] != 3):
        raise SkippedFile("multi-frame")
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    out = gray_or_rgb(out) if out.ndim == 3 else out
    return Decoded(out, "8", float(out.min()), float(out.max()))
