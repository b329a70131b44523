"""What dicom2nii reports: one SeriesResult per series and one record per input file, in a
ConversionReport that the CLI renders as a table or JSON. Standard library only, so that
the report of an unchanged rerun (batch.rerun) is made without numpy or pydicom.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convkit.outcomes import Outcome, batch_exit_code


@dataclass
class SeriesResult:
    """What happened to one series."""

    label: str
    series_uid: str
    series_number: int | None
    description: str
    modality: str
    files: int
    status: Outcome
    outputs: list[str] = field(default_factory=list)
    shape: list[int] = field(default_factory=list)
    spacing: list[float] = field(default_factory=list)
    orientation: str = ""
    dtype: str = ""
    notes: list[str] = field(default_factory=list)
    reason: str = ""
    hint: str = ""
    unreadable: list[str] = field(default_factory=list)  # files that could not be decoded
    #: why its SeriesInstanceUID became several outputs ('' when it did not): the attributes
    #: that differ with this output's value and the series' values (also in the sidecar)
    split: str = ""
    seconds: float = 0.0  # spent converting it in this run (0 when it was not converted)


@dataclass
class ConversionReport:
    """The outcome of convert_folder: per series and per input file."""

    input: str
    output: str
    series: list[SeriesResult]
    #: dicom.header.FileRecord of each input file (ReportedFile in an unchanged rerun's)
    files: list[Any]
    #: labels of the series that failed because their outputs could not be written
    output_failed: list[str] = field(default_factory=list)
    #: labels of the series not tried: the batch was interrupted (BatchInterrupted)
    not_tried: list[str] = field(default_factory=list)
    #: notes on the run as a whole (e.g. fewer worker processes than asked, for memory)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all done, 6 partial, 4 all refused, 3 all unreadable, 5 none written and some
        could not be written (see DESIGN.md); 130 when interrupted."""
        if self.not_tried:
            return 130
        code = batch_exit_code(s.status for s in self.series)
        return 5 if code in (3, 4) and self.output_failed else code

    def to_json(self) -> dict[str, Any]:
        files = [{"path": str(r.path), "status": r.status, "reason": r.reason, "series": r.series}
                 for r in self.files]
        counts: dict[str, int] = {}
        for record in self.files:
            counts[record.status] = counts.get(record.status, 0) + 1
        series_counts: dict[str, int] = {}
        for result in self.series:
            series_counts[result.status] = series_counts.get(result.status, 0) + 1
        document = {"input": self.input, "output": self.output, "exit_code": self.exit_code,
                    "series": [asdict(s) for s in self.series], "series_counts": series_counts,
                    "file_counts": counts, "files": files}
        if self.notes:
            document["notes"] = list(self.notes)
        if self.not_tried:
            document["not_tried"] = list(self.not_tried)
        return document


@dataclass
class ReportedFile:
    """An input file as a report lists it (dicom.header.FileRecord's reported fields): what
    the report of an unchanged rerun holds, read back from its snapshot."""

    path: Path
    status: str
    reason: str = ""
    series: str = ""


__all__ = ["ConversionReport", "ReportedFile", "SeriesResult"]
