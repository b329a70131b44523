"""What a non-DICOM file is, from its content (magic numbers); its name alone never makes
it an image (but a volume's name makes unreadable content an error, see below).

- NIfTI-1: sizeof_hdr 348 (either byte order) at byte 0 and magic 'n+1' (single file)
  or 'ni1' (header of a .hdr/.img pair) at byte 344; without the magic it is ANALYZE 7.5.
- NIfTI-2: sizeof_hdr 540 at byte 0 and magic 'n+2' / 'ni2' at byte 4.
- gzip-compressed files are looked at after decompressing their first bytes.
- NRRD: 'NRRD000' at byte 0 (attached .nrrd and detached .nhdr headers alike).
- MetaImage: a text header whose first key is 'ObjectType' (or NDims) and that
  names an ElementDataFile.

A file named like a volume (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) whose content is
none of these (a corrupt gzip stream, random bytes) is given the kind its name
promises: the volume reader then reports why it cannot be read (an error finding),
instead of the file passing as an unknown non-image.
"""

from __future__ import annotations

import stat
import struct
import zlib
from pathlib import Path

#: Suffixes that promise DICOM: a file so named that is not DICOM deserves a finding.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dc3")
#: Bytes read to identify a file (a NIfTI-2 header is 540 bytes).
HEAD_BYTES = 544
#: Content kinds of volume files.
VOLUME_KINDS = ("nifti1", "nifti2", "nifti1-pair", "nifti2-pair", "nrrd", "metaimage")
#: The kind a volume file's name promises (when its content says nothing).
NAMED_KINDS = {".nii.gz": "nifti1", ".nii": "nifti1", ".nrrd": "nrrd", ".nhdr": "nrrd",
               ".mha": "metaimage", ".mhd": "metaimage"}

_GZIP_MAGIC = b"\x1f\x8b"
_METAIMAGE_FIRST_KEYS = (b"objecttype", b"ndims", b"objectsubtype", b"comment")


def read_head(path: Path, size: int = HEAD_BYTES) -> tuple[bytes, bool]:
    """(first size bytes of the content, gzip-compressed?); gzip files are decompressed
    (as far as the stream is sound: a corrupt stream gives what came before the damage)."""
    with open(path, "rb") as handle:
        raw = handle.read(max(size, 64))
    if raw[:2] != _GZIP_MAGIC:
        return raw[:size], False
    decompressor = zlib.decompressobj(31)
    out = b""
    try:
        with open(path, "rb") as handle:
            while len(out) < size:
                chunk = handle.read(65536)
                if not chunk:
                    break
                out += decompressor.decompress(chunk, size - len(out))
                if decompressor.eof:
                    break
    except zlib.error:
        pass
    return out[:size], True


def sniff(path: Path) -> str:
    """'empty', one of VOLUME_KINDS, 'analyze', 'gzip' (something else compressed), 'other',
    'special' (a pipe, socket or device: never opened) or 'unreadable' (a broken link, no
    permission)."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return "special"
        if status.st_size == 0:
            return "empty"
        head, compressed = read_head(path)
    except OSError:
        return "unreadable"
    kind = nifti_kind(head)
    if kind:
        return kind
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if not compressed and _looks_like_metaimage(path, head):
        return "metaimage"
    return named_kind(path) or ("gzip" if compressed else "other")


def named_kind(path: Path) -> str:
    """The volume kind path's name promises ('nifti1', 'nrrd', 'metaimage'), or ''."""
    name = path.name.lower()
    return next((kind for suffix, kind in NAMED_KINDS.items() if name.endswith(suffix)), "")


#: NIfTI sizeof_hdr -> where its magic stands; (sizeof_hdr, magic) -> the kind of file.
_MAGIC_AT = {348: slice(344, 348), 540: slice(4, 8)}
_NIFTI_KINDS = {(348, b"n+1\x00"): "nifti1", (348, b"ni1\x00"): "nifti1-pair",
                (540, b"n+2\x00"): "nifti2", (540, b"ni2\x00"): "nifti2-pair"}


def nifti_kind(head: bytes) -> str:
    """'nifti1', 'nifti2', 'nifti1-pair', 'nifti2-pair', 'analyze' or '' from a header's bytes."""
    if len(head) < 348:
        return ""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0]
        if size in _MAGIC_AT and len(head) >= size:
            kind = _NIFTI_KINDS.get((size, head[_MAGIC_AT[size]]))
            if kind or size == 348:  # sizeof_hdr 348 without a NIfTI magic: ANALYZE 7.5
                return kind or "analyze"
    return ""


def _looks_like_metaimage(path: Path, head: bytes) -> bool:
    first = head.lstrip().split(b"\n", 1)[0].split(b"=", 1)[0].strip().lower()
    if first not in _METAIMAGE_FIRST_KEYS:
        return False
    with open(path, "rb") as handle:
        text = handle.read(65536)
    return b"ElementDataFile" in text


def named_like_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES


def volume_stem(path: Path) -> str:
    """NAME of NAME.nii.gz, NAME.nrrd, NAME.mha ...: where its sidecars are found."""
    name = path.name
    lower = name.lower()
    for suffix in (".nii.gz", ".nii", ".hdr.gz", ".hdr", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
