"""Fixtures of the Slicer-side tests; helpers live in slicer_testing.py."""
import pytest
from slicer_testing import Mrml, new_mrml


@pytest.fixture
def mrml() -> Mrml:
    mrml = new_mrml()
    yield mrml
    mrml.scene.Clear(1)
