"""Segmentations: label maps <-> DICOM SEG, RTSTRUCT -> label maps (issue 15).

sopclass.py  which DICOM objects are segmentations (one place, by SOPClassUID)
sampling.py  a label map placed on another grid in world space (exact or nearest)
labels.py    segment names, colours and codes (defaults and the --labels file)
dicomseg.py  write a label map as DICOM SEG; read a SEG as a label map on its source grid
"""
