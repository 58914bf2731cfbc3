"""The test suite; its folders mirror the packages (tests/teacher/ tests teacher/, ...).

Tests import shared helpers as ``tests.<module>`` (the suite is a package so that the folders
named like the packages cannot shadow them).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root
