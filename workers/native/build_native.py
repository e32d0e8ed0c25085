"""cffi builder of ``workers._native`` (the per-page C loops, pagecodec.c).

setuptools runs this through setup.py's
``cffi_modules=["workers/native/build_native.py:ffibuilder"]`` from the
repository root; ``python workers/native/build_native.py`` builds the
module in place (``workers/_native*.so``) for development.

The headers of MODULES are both the C headers and the cdef (their include
guards dropped).  The package version from
pyproject.toml is baked into the module (``mfd_package_version()``) so that
``workers.codec`` can refuse a stale in-tree build.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import tomllib

import cffi

NATIVE_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(NATIVE_DIR))
# the C modules of the extension: <name>.h joins the cdef, in this order
# (status.h's MFD_* codes and pagecodec.h's types come first), <name>.c the
# sources; the software codec's two files are chosen below
MODULES = ["status", "pagecodec", "zstream", "rawloop", "strict_inflate", "iaa_emulator",
           "qpl_shim"]
# C files of the extension behind those headers, not in the cdef
INTERNAL_SOURCES = [os.path.join(NATIVE_DIR, f"{name}.c") for name in
                    ("emu_control", "emu_ring", "emu_client")]
# an include guard's three lines: cffi's cdef parses no conditionals
_GUARD = re.compile(r"^#(ifndef|define) MFD_\w+_H$|^#endif$", re.MULTILINE)

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


# The software path's raw-DEFLATE library, per direction, fastest first
# (measured per 4 KiB page, bench/README.md).  MFD_CODEC picks by hand:
# "auto" (default), or "<compress>[/<decompress>]", e.g. "zlib" for the
# zlib-only floor or "isal/libdeflate".  The build compiles
# deflate_<compress>.c and inflate_<decompress>.c (deflate_backend.h).
CODEC_LIBRARIES = {            # name: (header, -l library, symbol)
    "isal": ("isa-l.h", "isal", "isal_deflate_stateless"),
    "libdeflate": ("libdeflate.h", "deflate", "libdeflate_deflate_decompress_ex"),
    "zlib": ("zlib.h", "z", "deflateInit2_"),
}
COMPRESS_ORDER = ("isal", "libdeflate", "zlib")
DECOMPRESS_ORDER = ("libdeflate", "isal", "zlib")


def _links(name: str) -> bool:
    """Whether a program using library ``name`` compiles and links here."""
    header, library, symbol = CODEC_LIBRARIES[name]
    program = f"#include <{header}>\nint main(void) {{ return (int)(long)&{symbol} == 1; }}\n"
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w", encoding="ascii") as f:
            f.write(program)
        result = subprocess.run([*compiler, source, "-o", os.path.join(tmp, "probe"), f"-l{library}"],
                                capture_output=True)
    return result.returncode == 0


def choose_codecs(request: str) -> tuple[str, str]:
    """(compress, decompress) library names for an MFD_CODEC value."""
    request = request.strip() or "auto"
    if request == "auto":
        found = {name for name in CODEC_LIBRARIES if _links(name)}
        return (next(n for n in COMPRESS_ORDER if n in found or n == "zlib"),
                next(n for n in DECOMPRESS_ORDER if n in found or n == "zlib"))
    parts = request.split("/")
    if len(parts) > 2 or any(p not in CODEC_LIBRARIES for p in parts):
        raise SystemExit(f"MFD_CODEC={request!r}: expected \"auto\" or <compress>[/<decompress>] "
                         f"with names from {', '.join(CODEC_LIBRARIES)}")
    for name in set(parts):
        if not _links(name):
            raise SystemExit(f"MFD_CODEC={request!r}: {name} cannot be linked here "
                             f"(is its -dev package installed?)")
    return parts[0], parts[-1]


CODECS = choose_codecs(os.environ.get("MFD_CODEC", "auto"))
print(f"multifd-engine: software codec {CODECS[0]} (compress) / {CODECS[1]} (decompress)",
      file=sys.stderr)
CODEC_SOURCES = [os.path.join(NATIVE_DIR, name) for name in
                 ("deflate_backend.c", f"deflate_{CODECS[0]}.c", f"inflate_{CODECS[1]}.c")]
CODEC_LIBS = [CODEC_LIBRARIES[n][1] for n in dict.fromkeys(CODECS) if n != "zlib"]


def _cdef_text(module: str) -> str:
    with open(os.path.join(NATIVE_DIR, f"{module}.h"), encoding="utf-8") as f:
        return _GUARD.sub("", f.read())


CDEF = "\n".join(_cdef_text(m) for m in MODULES)

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "workers._native",
    "#include <stdint.h>\n" + "".join(f"#include \"{m}.h\"\n" for m in MODULES),
    sources=[_rel(os.path.join(NATIVE_DIR, f"{m}.c")) for m in MODULES]
    + [_rel(path) for path in INTERNAL_SOURCES + CODEC_SOURCES],
    include_dirs=[NATIVE_DIR],
    libraries=CODEC_LIBS + ["z", "dl", "pthread"],  # dl: libqpl is loaded at run time
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
