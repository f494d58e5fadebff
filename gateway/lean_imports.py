"""Imports that would otherwise load heavy optional packages the gateway never uses.

sqlite-utils imports numpy when it is installed (scikit-learn and scipy bring it in), only to
map numpy scalars to column types when such values are inserted; the gateway never stores
numpy values. numpy costs every worker about 15 MB of resident memory, so sqlite-utils is
imported here first with numpy hidden; numpy stays importable for anything that needs it later.
"""

from __future__ import annotations

import importlib
import sys

#: Optional packages sqlite-utils probes at import time and the gateway does not need.
HIDDEN_FROM_SQLITE_UTILS = ("numpy", "pandas")


def import_sqlite_utils_lean() -> None:
    """Import sqlite-utils without letting it load numpy or pandas (unless already loaded)."""
    if "sqlite_utils" in sys.modules:
        return
    hidden = [name for name in HIDDEN_FROM_SQLITE_UTILS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        importlib.import_module("sqlite_utils")
    finally:
        for name in hidden:
            del sys.modules[name]


import_sqlite_utils_lean()
