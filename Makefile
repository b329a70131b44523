# convkit: `make demo` and `make test` work from a fresh clone (Python 3.11+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck check bench sample-data clean tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

sample_data/dicom: | $(STAMP)
	$(BIN)/python sample_data/make_sample_data.py

demo: $(STAMP) sample_data/dicom
	rm -rf demo_output
	$(BIN)/convkit dicom2nii --list sample_data/dicom
	$(BIN)/convkit dicom2nii sample_data/dicom demo_output
	@echo "--- segmentation round trip: the CT's ground-glass SEG -> label map -> SEG -> Dice"
	$(BIN)/convkit nii2dicom demo_output/2_Chest_CT_synthetic_seg.nii.gz \
	  demo_output/ggo_roundtrip.seg.dcm --seg --reference sample_data/dicom/chest_ct
	$(BIN)/convkit compare demo_output/2_Chest_CT_synthetic_seg.nii.gz \
	  demo_output/ggo_roundtrip.seg.dcm
	$(BIN)/convkit preview sample_data/dicom/chest_ct -o demo_output/ggo_overlay.png \
	  --overlay sample_data/dicom/chest_ct_ggo.seg.dcm --mosaic 3x3 --window lung

# dicom3tools (dciodvfy, dcentvfy) validate the DICOM that nii2dicom writes; Debian's chromium
# runs the report page's browser tests (driven by Playwright, which never downloads a browser).
# Installed with apt when missing and possible (root, Debian/Ubuntu); otherwise those tests are
# skipped locally (never in CI, where CI=true makes a missing tool an error).
tools:
	@command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq dicom3tools >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq dicom3tools >/dev/null)); \
	  else echo "note: dicom3tools (dciodvfy) not installed: DICOM validation tests will skip"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null)); \
	  else echo "note: chromium not installed: the report's browser tests will skip"; fi; }

# The full suite (the README's command): everything, with the 15 slowest tests listed.
test: $(STAMP) tools
	$(BIN)/python -m pytest -q --durations=15

# The fast lane while developing (well under a minute): leaves out the tests marked corpus
# (../shared/data), oracle (dcm2niix, dicom3tools), subprocess (the real CLI process) and slow;
# see the markers in pyproject.toml and tests/conftest.py. `make test` still runs them all.
FAST := not slow and not corpus and not oracle and not subprocess
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "$(FAST)"

# Guard rails (CI runs them before the tests): ruff with a complexity limit, and mypy as
# configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check convkit tests benchmarks sample_data

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Every benchmark, side by side with the tool a user would pick instead (benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/preview.py
	$(BIN)/python benchmarks/audit.py
	$(BIN)/python benchmarks/compare.py
	$(BIN)/python benchmarks/batch.py
	$(BIN)/python benchmarks/seg.py
	$(BIN)/python benchmarks/report.py

sample-data: $(STAMP)
	$(BIN)/python sample_data/make_sample_data.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache .mypy_cache .ruff_cache
