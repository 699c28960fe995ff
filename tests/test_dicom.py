"""DICOM files as PACS exports hold them, written with pydicom: windowing, MONOCHROME1, skips, compression, privacy."""

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import BasicTextSRStorage, JPEGLSLossless, RLELossless

from fedkr.shared.data import DataError, load_dataset
from fedkr.shared.dicom import is_dicom, read_dicom
from fedkr.shared.image_decode import SkippedFile
from helpers import PATIENT_NAME, write_dicom

RAMP = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)  # stored values 0..4080


def test_rescale_then_named_window(tmp_path):
    # stored 0..4080, slope 2, intercept -1024: -1024..7136; the window 0 +- 1000 spans [-1000, 1000]
    write_dicom(tmp_path / "ct.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=2001)
    pixels = read_dicom(tmp_path / "ct.dcm").pixels
    values = RAMP * 2.0 - 1024
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16)
    assert (pixels[values <= -1001] == 0).all() and (pixels[values > 1000] == 255).all()
    mid = np.flatnonzero(np.abs(values.ravel()) < 900)[0]
    assert abs(int(pixels.ravel()[mid]) - round((values.ravel()[mid] + 1000) / 2000 * 255)) <= 1


def test_no_window_means_the_full_range(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP)
    pixels = read_dicom(tmp_path / "a.dcm").pixels
    assert pixels.min() == 0 and pixels.max() == 255 and pixels[0, 1] < pixels[0, 2]


def test_monochrome1_is_inverted(tmp_path):
    write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1")
    write_dicom(tmp_path / "m2.dcm", RAMP, photometric="MONOCHROME2")
    assert (read_dicom(tmp_path / "m1.dcm").pixels.astype(int) == 255 - read_dicom(tmp_path / "m2.dcm").pixels).all()


def test_multi_frame_and_non_image_objects_are_skipped(tmp_path):
    write_dicom(tmp_path / "cine.dcm", np.stack([RAMP, RAMP]), NumberOfFrames=2)
    write_dicom(tmp_path / "report.dcm", None, sop_class=BasicTextSRStorage)
    with pytest.raises(SkippedFile, match="multi-frame"):
        read_dicom(tmp_path / "cine.dcm")
    with pytest.raises(SkippedFile, match="non-image"):
        read_dicom(tmp_path / "report.dcm")


def test_rle_compressed_pixels_decode(tmp_path):
    import pydicom

    write_dicom(tmp_path / "a.dcm", RAMP)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert (read_dicom(tmp_path / "rle.dcm").pixels == read_dicom(tmp_path / "a.dcm").pixels).all()


def test_compression_without_a_decoder_is_refused_by_name(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    write_dicom(tmp_path / "a.dcm", RAMP)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not decodable here \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jls.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match=r"jls.dcm: pixel data compressed as JPEG-LS Lossless .* no installed DICOM decoder"):
        read_dicom(tmp_path / "jls.dcm")


def test_files_without_a_suffix_are_found_by_their_marker(tmp_path):
    write_dicom(tmp_path / "IM000001", RAMP)
    (tmp_path / "notes").write_bytes(b"x" * 200)
    assert is_dicom(tmp_path / "IM000001") and not is_dicom(tmp_path / "notes")


def test_class_folders_of_dicom_files_load_with_counts(tmp_path, caplog):
    for cls, flip in (("effusion", False), ("normal", True)):
        for i in range(4):
            write_dicom(tmp_path / cls / f"patient{i}" / "series1" / f"IM{i:04d}", RAMP[::-1] if flip else RAMP,
                        photometric="MONOCHROME1" if i % 2 else "MONOCHROME2", RescaleSlope=1, RescaleIntercept=-100)
    write_dicom(tmp_path / "normal" / "cine.dcm", np.stack([RAMP, RAMP]), NumberOfFrames=2)
    write_dicom(tmp_path / "normal" / "sr.dcm", None, sop_class=BasicTextSRStorage)
    with caplog.at_level("INFO", logger="fedkr"):
        splits = load_dataset(str(tmp_path), folder_test_fraction=0.0)
    assert splits.train.images.shape == (8, 16, 16, 1) and list(splits.train.class_counts()) == [4, 4]
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 DICOM multi-frame files" in log and "1 DICOM objects without an image" in log
    assert PATIENT_NAME not in log and "PID-424242" not in log


def test_patient_attributes_are_never_read(tmp_path):
    from fedkr.shared.dicom import PIXEL_TAGS, _dataset

    write_dicom(tmp_path / "a.dcm", RAMP)
    ds = _dataset(Path(tmp_path / "a.dcm"), PIXEL_TAGS)
    assert "PatientName" not in ds and "PatientID" not in ds and PATIENT_NAME not in str(ds)
