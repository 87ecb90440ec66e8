"""Loads libperforated through cffi (ABI mode).

The declarations come from the real header, between its ``/* <cdef> */`` markers, so the C header is
the single source of truth. The library is opened by absolute path, never through ``find_library``:
``$PERFORATED_LIBRARY`` if set, else the first ``libperforated.so*`` found in the package's
``__path__`` (in an editable install that list includes the site-packages directory that holds the
built library), else a build tree of the source checkout (``build/``), for developers.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import cffi

_HERE = Path(__file__).resolve().parents[1]  # the package folder, perforated/ (this file is in _c/)
_HEADER_NAME = "perforated.h"
_LIB_NAMES = ("libperforated.so", "libperforated.dylib", "perforated.dll")


def _candidate_dirs() -> list[Path]:
    import perforated  # the package, for its __path__ (editable installs add the build location)

    dirs = [Path(p) for p in getattr(perforated, "__path__", [])] + [_HERE]
    repo = _HERE.parents[2]
    dirs += [repo / "build", repo / "build" / "lib"]
    return dirs


def _find_header() -> Path:
    for d in _candidate_dirs():
        for c in (d / "include" / _HEADER_NAME, d / _HEADER_NAME):
            if c.is_file():
                return c
    repo_header = _HERE.parents[2] / "libperf" / "include" / _HEADER_NAME
    if repo_header.is_file():
        return repo_header
    raise ImportError(f"perforated: cannot find {_HEADER_NAME} next to the package or in the source tree")


def _find_library() -> Path:
    override = os.environ.get("PERFORATED_LIBRARY")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ImportError(f"PERFORATED_LIBRARY={override!r} is not a file")
        return path.resolve()
    for d in _candidate_dirs():
        for name in _LIB_NAMES:
            hits = sorted(d.glob(name + "*")) if d.is_dir() else []
            if hits:
                return hits[0].resolve()
    raise ImportError(
        "perforated: cannot find libperforated; install the package with `pip install .` "
        "or point PERFORATED_LIBRARY at the built library"
    )


def _cdef_from_header(text: str) -> str:
    match = re.search(r"/\* <cdef> \*/(.*)/\* </cdef> \*/", text, re.S)
    if not match:
        raise ImportError("perforated.h has no <cdef> section")
    body = match.group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)  # comments
    body = body.replace("PERF_API ", "")
    return body


ffi = cffi.FFI()
ffi.cdef(_cdef_from_header(_find_header().read_text()))
LIBRARY_PATH = _find_library()
# RTLD_NODELETE: the library stays mapped for the life of the process. cffi dlclose()s it when `lib`
# is collected at interpreter shutdown, while OpenMP worker threads of the library may still be alive;
# unmapped under them, a process exited with SIGSEGV about once in 25 runs (issue 29). The library is
# also linked with -z nodelete (CMakeLists.txt); the flag here covers libraries built without it.
lib = ffi.dlopen(str(LIBRARY_PATH), ffi.RTLD_NOW | getattr(ffi, "RTLD_NODELETE", 0))
