"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` (as the ``postgres`` user when running as
root, through ``runuser``), on 127.0.0.1 and a free port, ``fsync=off``. When the binaries are missing
the test is skipped, except in CI (``CI`` or ``RF_TEST_REQUIRE_POSTGRES`` set), where it fails.

Used by tests/test_data.py (PostgreSQL data sources) and by the PostgreSQL store's tests
(tests/test_store_pg.py, the contract suite on both stores: the ``pg_server`` fixture of
tests/conftest.py, one server per test session, one database per module or test made from a
migrated template with ``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

USER = "ada"
PASSWORD = "s3cret-pw"
#: The variable the test workspaces' ``[store] password_env`` names (not RF_*: conftest clears those).
PASSWORD_ENV = "TEST_RF_PG_PASSWORD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_binaries() -> tuple[str | None, str | None]:
    """``pg_ctl`` and ``initdb``: on PATH, else where Debian/Ubuntu (``/usr/lib/postgresql/N/bin``) and
    the PGDG RPMs (``/usr/pgsql-N/bin``) put them — neither is on PATH there — newest version first."""
    found = shutil.which("pg_ctl"), shutil.which("initdb")
    if all(found):
        return found
    dirs = sorted((*Path("/usr/lib/postgresql").glob("*/bin"), *Path("/usr").glob("pgsql-*/bin")),
                  key=lambda d: [int(x) for x in "".join(c if c.isdigit() else " " for c in str(d)).split()],
                  reverse=True)
    for d in dirs:
        if (d / "pg_ctl").is_file() and (d / "initdb").is_file():
            return str(d / "pg_ctl"), str(d / "initdb")
    return None, None


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("RF_TEST_REQUIRE_POSTGRES"))


@contextlib.contextmanager
def postgres_server(max_connections: int = 100) -> Iterator[dict[str, Any]]:
    """A running server with superuser ``ada`` / ``s3cret-pw`` (scram-sha-256):
    ``{"host", "port", "user", "password", "dsn"}`` (the dsn without the password, database postgres)."""
    pg_ctl, initdb = pg_binaries()
    if not pg_ctl or not initdb:
        if _required():  # in CI a missing server fails
            pytest.fail("CI (or RF_TEST_REQUIRE_POSTGRES) is set but pg_ctl / initdb were not found")
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if not shutil.which("runuser"):
            (pytest.fail if _required() else pytest.skip)("running as root without runuser")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            (pytest.fail if _required() else pytest.skip)("running as root and there is no postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="rf-pg-"))
    data, pwfile, log = base / "data", base / "pw", base / "log"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(base, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    port = free_port()
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", USER, "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
                        f" -c synchronous_commit=off -c full_page_writes=off -c max_connections={max_connections}",
                        "start"], check=True, capture_output=True, timeout=120)
        yield {"host": "127.0.0.1", "port": port, "user": USER, "password": PASSWORD,
               "dsn": f"postgresql://{USER}@127.0.0.1:{port}/postgres"}
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        # A session's databases are thousands of files (seconds to delete): removed in the background.
        try:
            subprocess.Popen(["rm", "-rf", "--", str(base)], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            shutil.rmtree(base, ignore_errors=True)


class PgDatabases:
    """Databases of one server for the store's tests: a template migrated once, copies made in ~0.1 s."""

    TEMPLATE = "rf_template"

    def __init__(self, server: dict[str, Any]) -> None:
        self.server = server
        os.environ[PASSWORD_ENV] = PASSWORD  # inherited by the `rf` subprocesses of the tests
        self._count = 0
        self._template_ready = False

    def url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.server['port']}/{name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), password=PASSWORD, autocommit=True) as con:
            con.execute(sql)

    def new(self, prefix: str = "t") -> str:
        """A new database holding the current schema: its url (the password: PASSWORD, also in $PASSWORD_ENV)."""
        if not self._template_ready:
            from rf.store.pg import PgStore

            self._admin(f"CREATE DATABASE {self.TEMPLATE}")
            PgStore.open(self.url(self.TEMPLATE), password_env=PASSWORD_ENV).close()
            self._template_ready = True
        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}".lower()
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.TEMPLATE}")
        return self.url(name)

    def toml(self, url: str) -> str:
        """rf.toml's ``[store]`` table for *url*."""
        return f'\n[store]\nurl = "{url}"\npassword_env = "{PASSWORD_ENV}"\n'

    def empty(self, prefix: str = "e") -> str:
        """A new empty database (no rf schema)."""
        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}".lower()
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)
