"""Batch conversion at archive scale: which series need converting (work.py), the manifest
that makes a run resumable (manifest.py), and where the series are converted: this
process, a local pool of worker processes, or a Dask cluster (executors.py).

dicom2nii.convert_folder drives it; the conversion of one series stays in dicom2nii.py
(convert_task), which the executors call in their workers.
"""
