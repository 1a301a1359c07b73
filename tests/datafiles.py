"""Paths of the real data the tests use (all inside the repository; see tests/data/README.md)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
CASE_DIRS = {
    "lung1": REPO / "promptseg" / "data",
    "brain2": DATA / "radiomics",
    "breast1": DATA / "radiomics",
}


def image(case: str) -> Path:
    return CASE_DIRS[case] / f"{case}_image.nrrd"


def label(case: str) -> Path:
    return CASE_DIRS[case] / f"{case}_label.nrrd"


CT_SLICE = DATA / "dicom_rt" / "ct.0.dcm"
RTSS = DATA / "dicom_rt" / "rtss.dcm"
