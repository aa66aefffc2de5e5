"""Packaging tests: build_scripts/ checked without a build (the frozen bundle is smoke-tested by .ci/run)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the icon tests render with Qt, no display needed
