"""convkit: DICOM to NIfTI/NRRD with geometry you can trust.

The public API is imported lazily (start-up time counts on small jobs)::

    import convkit
    scan = convkit.scan_folder("dicom/")
    volume = convkit.read_series(scan.series[0])
    convkit.write_volume(volume, "ct.nii.gz")
    image = convkit.to_nibabel(volume)   # or convkit.to_sitk(volume)
    report = convkit.convert_folder("dicom/", "out/")   # what `convkit dicom2nii` does
"""

from __future__ import annotations

from convkit._version import __version__ as __version__
from convkit.lazy import lazy_api

_API = {
    "scan_folder": "convkit.dicom.scan",
    "ScanResult": "convkit.dicom.scan",
    "SeriesGroup": "convkit.dicom.group",
    "read_series": "convkit.dicom.series",
    "ConvertOptions": "convkit.dicom.plan",
    "write_volume": "convkit.formats",
    "read_volume": "convkit.formats",
    "load_volume": "convkit.inputs",
    "convert_folder": "convkit.dicom2nii",
    "ConversionReport": "convkit.dicom2nii",
    "Volume": "convkit.volume",
    "to_nibabel": "convkit.formats.nifti",
    "to_sitk": "convkit.formats.itk",
    "audit_path": "convkit.audit",
    "AuditReport": "convkit.audit",
    "compare_files": "convkit.compare",
    "compare_volumes": "convkit.compare",
    "ConvkitError": "convkit.errors",
    "InputError": "convkit.errors",
    "RefusedError": "convkit.errors",
    "OutputError": "convkit.errors",
    "UsageError": "convkit.errors",
}
__all__, __getattr__, __dir__ = lazy_api(__name__, _API, ("__version__",))
