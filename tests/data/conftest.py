"""Fixtures of the data-layer tests: `fake_media`, the generator of small test videos."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fake_media():
    """tests/data/fake_media.py as a module, loaded from its path so that it does not depend on
    pytest's import mode or rootdir (tests/ is not a package). Skips without PyAV, OpenCV or scikit-image."""
    for module, package in (("av", "av"), ("cv2", "opencv-python-headless"), ("skimage", "scikit-image")):
        pytest.importorskip(module, reason=f"{package} not installed (pip install 'sentangle[extract]')")
    spec = importlib.util.spec_from_file_location("fake_media", Path(__file__).with_name("fake_media.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_media"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
