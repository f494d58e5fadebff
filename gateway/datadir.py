"""The data directory (the database's directory, `data/` by default) and what the gateway keeps
there besides the database:

- `policies/`, the served policies directory when the configuration names none. It is created
  with a copy of the example policies the first time it is needed, so that `./dev serve` has
  something to serve and `policies add` never writes into the repository's tracked files.
- `admin-token`, the management API's admin token generated on the first start of a gateway
  whose configuration sets none (owner-only permissions). `python -m gateway admin-token`
  prints it again.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from gateway.config import Config
from gateway.errors import ConfigError

log = logging.getLogger("gateway.datadir")

#: The example policies shipped with the source tree (absent from an installed wheel).
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "policies"
ADMIN_TOKEN_FILE = "admin-token"
#: The two 401 messages of the management API: no token at all, or not the token.
NO_ADMIN_TOKEN = ("No admin token is configured on this gateway: set [admin] token_env (default "
                  "GATEWAY_ADMIN_TOKEN), or let `python -m gateway serve` generate one "
                  "(`python -m gateway admin-token` prints it).")
WRONG_ADMIN_TOKEN = ("The credential given is not this gateway's admin token (nor an API key); "
                     "`python -m gateway admin-token` prints the admin token.")


def prepare_policies_dir(config: Config) -> Path:
    """The served policies directory; the default one is created (with the examples) if
    missing. A configured directory is used as it is: a missing one is an error elsewhere."""
    directory = Path(config.policies_dir)
    if not config.seed_policies or directory.exists():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Copy into a hidden sibling, then rename: several workers starting at once race here, and
    # none of them may see a half-filled directory.
    staging = Path(tempfile.mkdtemp(prefix=".policies-", dir=directory.parent))
    try:
        if EXAMPLES_DIR.is_dir():
            for example in sorted(EXAMPLES_DIR.iterdir()):
                if example.is_file() and example.suffix in (".pol", ".json"):
                    shutil.copy2(example, staging / example.name)
        try:
            staging.rename(directory)
        except OSError:  # another process made it first
            if not directory.is_dir():
                raise
            return directory
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("created the policies directory %s with the example policies", directory)
    return directory


def admin_token_path(config: Config) -> Path:
    return config.data_dir / ADMIN_TOKEN_FILE


def readable_by_others(path: Path) -> bool:
    """Whether the token file's permissions were widened since it was made (owner-only)."""
    try:
        return bool(path.stat().st_mode & 0o077)
    except OSError:
        return False


def read_admin_token(config: Config) -> str | None:
    """The generated admin token, or None when none was generated yet."""
    try:
        token = admin_token_path(config).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_admin_token(config: Config) -> tuple[str, bool]:
    """(token, created): the generated admin token, made now if there is none yet. The file is
    created with mode 0600 in one step, so it is never readable by others, even briefly."""
    existing = read_admin_token(config)
    if existing is not None:
        return existing, False
    path = admin_token_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "gwadmin_" + secrets.token_urlsafe(32)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # there, but empty: never guess, and never overwrite it silently
        raise ConfigError(f"the admin token file {path} is empty: delete it, and the next "
                          "start generates a new token") from None
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token, True
