#!/usr/bin/env bash
# The property-based tests with many more examples than the test suite runs (300).
# Usage: bench/long_properties.sh [EXAMPLES]   (default 20000; a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
TI_HYPOTHESIS_EXAMPLES="${1:-20000}" exec "${PYTHON:-.venv/bin/python}" -m pytest -q -p no:cacheprovider tests/test_properties.py
