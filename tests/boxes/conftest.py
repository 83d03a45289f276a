"""The box tests' lab: one client-r1-r2-server trio per test module (see boxlab.py)."""

import os

import pytest
from boxlab import Lab


@pytest.fixture(scope="module")
def boxlab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    lab = Lab(f"bx{os.getpid()}")
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()
