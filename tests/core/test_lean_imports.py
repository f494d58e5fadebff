"""A worker does not load heavy packages it never uses (each costs megabytes per worker)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import gateway.app
heavy = ("numpy", "pandas", "psycopg", "psycopg_pool", "jwt", "cryptography")
loaded = sorted(name for name in heavy if name in sys.modules)
import sqlite_utils
db = sqlite_utils.Database(memory=True)
db["t"].insert({"n": 1})
print(json.dumps({"loaded": loaded, "rows": db.execute("select n from t").fetchall()}))
"""


def test_importing_the_app_loads_neither_numpy_nor_psycopg() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    answer = json.loads(out)
    assert answer["loaded"] == []
    assert answer["rows"] == [[1]]  # sqlite-utils works without them


def test_numpy_stays_importable_after_the_gateway_is() -> None:
    code = ("import gateway.app, importlib.util, sys; "
            "spec = importlib.util.find_spec('numpy'); "
            "print(spec is None or __import__('numpy').__name__ == 'numpy')")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert out.strip() == "True"
