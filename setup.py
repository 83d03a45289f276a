"""The compiled parts of probe: `probe/files/_fastscan.pyx` (the flow table and pcap reader of
`probe analyze`) and `probe/files/_flowjson.pyx` (`--json` of its ordinary flows), built by
`pip install .` with Cython (pyproject.toml's build requirements).
Without a C compiler the install still succeeds and `probe analyze` runs the pure Python code."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("probe.files._fastscan", ["probe/files/_fastscan.pyx"], optional=True),
                             Extension("probe.files._flowjson", ["probe/files/_flowjson.pyx"], optional=True)],
                            compiler_directives={"language_level": "3"}))
