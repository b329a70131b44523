"""The DICOM data dictionary entries convkit reads: keyword -> (tag, VR).

One table for the tag walker's lists (fastheader: what discovery reads, what identifies a
patient) and the sidecar's (sidecar.py): the VR is the dictionary's, the one an implicit VR
file's values are read as. A test holds every entry to pydicom's data dictionary.
"""

from __future__ import annotations

ENTRIES: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"), "ImageType": (0x00080008, "CS"),
    "SOPClassUID": (0x00080016, "UI"), "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"), "AcquisitionTime": (0x00080032, "TM"),
    "ContentTime": (0x00080033, "TM"), "AccessionNumber": (0x00080050, "SH"),
    "Modality": (0x00080060, "CS"), "Manufacturer": (0x00080070, "LO"),
    "InstitutionName": (0x00080080, "LO"), "InstitutionAddress": (0x00080081, "ST"),
    "ReferringPhysicianName": (0x00080090, "PN"), "SeriesDescription": (0x0008103E, "LO"),
    "InstitutionalDepartmentName": (0x00081040, "LO"),
    "PerformingPhysicianName": (0x00081050, "PN"), "OperatorsName": (0x00081070, "PN"),
    "ManufacturerModelName": (0x00081090, "LO"), "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"), "PatientBirthDate": (0x00100030, "DA"),
    "OtherPatientIDs": (0x00101000, "LO"), "OtherPatientNames": (0x00101001, "PN"),
    "PatientAddress": (0x00101040, "LO"), "PatientMotherBirthName": (0x00101060, "PN"),
    "PatientTelephoneNumbers": (0x00102154, "SH"), "ContrastBolusAgent": (0x00180010, "LO"),
    "BodyPartExamined": (0x00180015, "CS"), "ScanningSequence": (0x00180020, "CS"),
    "SequenceVariant": (0x00180021, "CS"), "ScanOptions": (0x00180022, "CS"),
    "MRAcquisitionType": (0x00180023, "CS"), "SequenceName": (0x00180024, "SH"),
    "SliceThickness": (0x00180050, "DS"), "KVP": (0x00180060, "DS"),
    "RepetitionTime": (0x00180080, "DS"), "EchoTime": (0x00180081, "DS"),
    "InversionTime": (0x00180082, "DS"), "ImagingFrequency": (0x00180084, "DS"),
    "EchoNumbers": (0x00180086, "IS"), "MagneticFieldStrength": (0x00180087, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"), "EchoTrainLength": (0x00180091, "IS"),
    "SoftwareVersions": (0x00181020, "LO"), "ProtocolName": (0x00181030, "LO"),
    "TriggerTime": (0x00181060, "DS"), "ReconstructionDiameter": (0x00181100, "DS"),
    "GantryDetectorTilt": (0x00181120, "DS"), "TableHeight": (0x00181130, "DS"),
    "ExposureTime": (0x00181150, "IS"), "XRayTubeCurrent": (0x00181151, "IS"),
    "Exposure": (0x00181152, "IS"), "ConvolutionKernel": (0x00181210, "SH"),
    "InPlanePhaseEncodingDirection": (0x00181312, "CS"), "FlipAngle": (0x00181314, "DS"),
    "PatientPosition": (0x00185100, "CS"), "RectilinearPhaseEncodeReordering": (0x00189034, "CS"),
    "DiffusionDirectionality": (0x00189075, "CS"), "DiffusionBValue": (0x00189087, "FD"),
    "DiffusionGradientOrientation": (0x00189089, "FD"), "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"), "SeriesNumber": (0x00200011, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"), "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"), "ImageOrientationPatient": (0x00200037, "DS"),
    "TemporalPositionIdentifier": (0x00200100, "IS"), "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"), "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"), "Columns": (0x00280011, "US"), "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"), "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"), "BurnedInAnnotation": (0x00280301, "CS"),
    "WindowCenter": (0x00281050, "DS"), "WindowWidth": (0x00281051, "DS"),
    "RescaleIntercept": (0x00281052, "DS"), "RescaleSlope": (0x00281053, "DS"),
    "RescaleType": (0x00281054, "LO"),
}


def entries(*keywords: str) -> dict[str, tuple[int, str]]:
    """keyword -> (tag, VR) of these keywords, in this order."""
    return {keyword: ENTRIES[keyword] for keyword in keywords}
