"""cffi builder of ``workers._native`` (the per-page C loops, pagecodec.c).

setuptools runs this through setup.py's
``cffi_modules=["workers/native/build_native.py:ffibuilder"]`` from the
repository root; ``python workers/native/build_native.py`` builds the
module in place (``workers/_native*.so``) for development.

pagecodec.h is both the C header and the cdef.  The package version from
pyproject.toml is baked into the module (``mfd_package_version()``) so that
``workers.codec`` can refuse a stale in-tree build.
"""

from __future__ import annotations

import os
import sys
import tomllib

import cffi

NATIVE_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(NATIVE_DIR))
HEADER = os.path.join(NATIVE_DIR, "pagecodec.h")
SOURCE = os.path.join(NATIVE_DIR, "pagecodec.c")

COMPILE_ARGS = ["-O2", "-std=c11", "-Wall", "-Wextra"]


def _package_version() -> str:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["version"]


def _rel(path: str) -> str:
    """``path`` relative to the current directory when it lies below it.

    setuptools wants extension sources relative to the project root (its
    object files then land under build/temp*, not under an absolute path);
    anywhere else, and for ffibuilder.compile() (which runs the compiler
    from its tmpdir), use the absolute path.
    """
    if __name__ == "__main__":
        return path
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _c_string(text: str) -> str:
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"version {text!r} cannot be baked into a C string")
    return f'"{text}"'


with open(HEADER, encoding="utf-8") as _f:
    CDEF = _f.read()

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "workers._native",
    "#include <stdint.h>\n#include \"pagecodec.h\"\n",
    sources=[_rel(SOURCE)],
    include_dirs=[NATIVE_DIR],
    libraries=["z"],
    define_macros=[("MFD_PACKAGE_VERSION", _c_string(_package_version()))],
    extra_compile_args=COMPILE_ARGS,
)


if __name__ == "__main__":
    # Build in place, under the name setuptools gives it (cffi modules use
    # the limited API): workers/_native.abi3.so next to workers/codec.py, so
    # a development build replaces an editable install's build instead of
    # shadowing it.  The generated C file and objects stay in build/cffi.
    so = ffibuilder.compile(tmpdir=os.path.join(ROOT, "build", "cffi"), verbose=True)
    target = os.path.join(ROOT, "workers", "_native.abi3.so")
    os.replace(so, target)
    print(f"built {target}", file=sys.stderr)
