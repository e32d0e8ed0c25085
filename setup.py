# The only job of this file: hook the cffi builder into the package build,
# as cffi documents for setuptools.  Metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["workers/native/build_native.py:ffibuilder"])
