"""Data with known geometry for tests, benchmarks and sample_data: not part of the runtime.

synthetic: DICOM series written from a known grid (every orientation, order, tilt,
gap, data type and transfer syntax). phantoms: anatomical test objects (a chest CT
with ground-glass patches, a head MR) as arrays with their masks.
"""
