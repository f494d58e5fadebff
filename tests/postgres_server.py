"""A real PostgreSQL server for tests: `initdb` and `pg_ctl` in a temporary directory.

PostgreSQL refuses to run as root, and tests run as root in CI: the server then runs as the
unprivileged system user `nobody` (`runuser`), in a directory of its own under the system temp
directory (pytest's are 0700 root's, which `nobody` cannot enter). It listens on a free port of
127.0.0.1 only, with no Unix socket, and trusts connections from 127.0.0.1 alone. Durability is
off (fsync, synchronous_commit): tests want speed, and a crash loses only test data.

`PostgresServer().start()` waits until it accepts connections; `stop()` stops it at once
(`immediate`: a crash, as far as clients can tell) and `start()` brings it back on the same port
and data. Without the binaries the tests that need it are skipped with the reason, except under
CI (`CI` set), where they must run: `.ci/run` and `./dev` install the Debian package.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from redis_server import free_port

SUPERUSER = "postgres"
#: The database holding the gateway's schema that each test's database is copied from.
MIGRATED_TEMPLATE = "gateway_template"
#: Who runs the server when the tests run as root.
UNPRIVILEGED_USER = "nobody"


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        on_path = shutil.which("initdb")
        if on_path:
            return Path(on_path).parent
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL (initdb) is not installed; CI must install it (see .ci/run)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, or ./dev setup "
                    "installs it)")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, cwd=self.directory, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "LC_ALL": "C"})
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}"
                               f"{log}")

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--no-instructions")
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port),
            "unix_socket_directories": "''", "fsync": "off", "synchronous_commit": "off",
            "full_page_writes": "off", "max_connections": "300", "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        # Only TCP from 127.0.0.1; no other address, no local socket.
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")

    def start(self) -> PostgresServer:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "start")
        return self

    def stop(self) -> None:
        """Stop at once, without a checkpoint (clients see their connections cut)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def execute(self, statement: str, params: Any = None, database: str = "postgres"
                ) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str, template: str = "template1") -> str:
        """A new database copied from `template`; returns its url."""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def create_migrated_template(self) -> str:
        """`MIGRATED_TEMPLATE` with the gateway's schema in place, so that each fresh database
        copied from it costs one CREATE DATABASE; returns its url."""
        from gateway.storage.postgres import Postgres, migrate
        from gateway.storage.settings import PostgresSettings

        url = self.create_database(MIGRATED_TEMPLATE)
        with Postgres(PostgresSettings(url=url, pool_min_size=0, pool_max_size=1)) as pg:
            migrate(pg)
        return url

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
