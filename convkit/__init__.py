"""convkit: DICOM to NIfTI/NRRD with geometry you can trust."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
