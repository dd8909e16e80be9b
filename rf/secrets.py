"""Where credential values live: the OS keyring, a 0600 file, or the environment.

Credential *metadata* is in DuckDB; the secret value never is. It goes
through the ``keyring`` library under the service name ``rf/<workspace id>``
(username = credential name), so macOS Keychain, Windows Credential Locker or
the Secret Service (GNOME Keyring, KWallet) keep it.

A headless Linux box (a server, a container, CI) has no keyring backend at
all — ``keyring`` then selects its ``fail`` backend, which refuses every
write. Rather than making credentials unusable there, rf falls back to
:class:`FileKeyring`: a keyring backend of its own that keeps a JSON file with
mode 0600 in a 0700 directory under the user's data dir
(``$XDG_DATA_HOME/rf/secrets.json``, default ``~/.local/share/rf/``). It is
used **only** when no real keyring is available, and ``rf credentials list``
says so. ``RF_SECRETS_FILE`` moves the file (tests), and
``PYTHON_KEYRING_BACKEND=rf.secrets.FileKeyring`` (keyring's own switch)
forces it.

``RF_SECRET_<NAME>`` (name upper-cased, ``-`` → ``_``) overrides a stored
value: the usual way to hand secrets to CI.

Services import this module only when a credential is used: choosing a
keyring backend probes D-Bus and entry points, which commands that never
touch a secret should not pay for.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jaraco.classes.properties import classproperty  # a dependency of keyring itself
from keyring.backend import KeyringBackend

from rf.errors import RfError

_LOCK = threading.Lock()


def secrets_file() -> Path:
    """The fallback file: ``$RF_SECRETS_FILE``, else ``$XDG_DATA_HOME/rf/secrets.json``."""
    override = os.environ.get("RF_SECRETS_FILE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "rf" / "secrets.json"


def env_var(name: str) -> str:
    """``RF_SECRET_<NAME>``: the environment variable that overrides credential ``name``."""
    return "RF_SECRET_" + name.upper().replace("-", "_")


def _display(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home and home != "/" and text.startswith(home + os.sep) else text


class FileKeyring(KeyringBackend):
    """A keyring backend keeping ``{service: {username: password}}`` in one 0600 JSON file.

    Writes go to a temporary file in the same directory (created 0600 before
    any byte is written) that is then renamed over the old one, so a crash
    never leaves a half-written or world-readable file behind.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    @classproperty
    def priority(cls) -> float:
        """Viable only when named by ``PYTHON_KEYRING_BACKEND``.

        Every ``KeyringBackend`` subclass is a candidate for keyring's
        automatic choice; were this one viable, keyring would chain it behind
        a real OS keyring and silently read values from the file. rf uses it
        as a fallback by itself (:func:`backend`), never through keyring's
        selection.
        """
        if os.environ.get("PYTHON_KEYRING_BACKEND") == f"{__name__}.FileKeyring":
            return 0.1
        raise RuntimeError("rf's file keyring is only used when no OS keyring exists")

    @property
    def path(self) -> Path:
        return secrets_file()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RfError(f"cannot read the secrets file {_display(self.path)}: {exc.strerror}",
                          "check its owner and permissions (it should be yours, mode 0600)") from None
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise RfError(f"the secrets file {_display(self.path)} is not valid JSON",
                          "restore it from a backup, or move it away and set the credentials again") from None
        if not isinstance(data, dict):
            raise RfError(f"the secrets file {_display(self.path)} is not a JSON object",
                          "move it away and set the credentials again")
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        path = self.path
        parent = path.parent
        fd, tmp = tempfile.mkstemp(prefix=".secrets-", dir=parent)  # mkstemp creates the file 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across threads and processes (every workspace shares the file).

        Readers need no lock: the file is replaced atomically.
        """
        with _LOCK:
            parent = self.path.parent
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # a directory made by something else: 0700 all the same
                if parent.stat().st_mode & 0o077:
                    os.chmod(parent, 0o700)
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows always has a real keyring
                yield
                return
            fd = os.open(parent / ".secrets.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the lock

    def get_password(self, service: str, username: str) -> str | None:
        with _LOCK:
            value = self._load().get(service, {}).get(username)
        return value if isinstance(value, str) else None

    def set_password(self, service: str, username: str, password: str) -> None:
        with self._locked():
            data = self._load()
            data.setdefault(service, {})[username] = password
            self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        with self._locked():
            data = self._load()
            entries = data.get(service, {})
            if username not in entries:
                from keyring.errors import PasswordDeleteError

                raise PasswordDeleteError(username)
            del entries[username]
            if not entries:
                data.pop(service, None)
            self._save(data)


# ---------------------------------------------------------------- choosing the backend

_resolved: tuple[tuple[str | None, str | None], KeyringBackend, bool] | None = None


def _usable(backend: Any) -> bool:
    """False for keyring's fail/null backends, and a chainer with nothing real behind it."""
    module = type(backend).__module__
    if module in ("keyring.backends.fail", "keyring.backends.null"):
        return False
    if module == "keyring.backends.chainer":
        return any(_usable(b) for b in getattr(backend, "backends", []))
    return True


def backend() -> tuple[KeyringBackend, bool]:
    """The keyring backend to use, and whether it is rf's fallback file.

    Re-resolved when ``PYTHON_KEYRING_BACKEND``/``RF_SECRETS_FILE`` change
    (tests switch them), cached otherwise: probing the OS keyring is slow.
    """
    global _resolved
    key = (os.environ.get("PYTHON_KEYRING_BACKEND"), os.environ.get("RF_SECRETS_FILE"))
    if _resolved is not None and _resolved[0] == key:
        return _resolved[1], _resolved[2]
    import keyring
    import keyring.core

    chosen: KeyringBackend | None = None
    try:
        chosen = keyring.core.load_env()  # keyring's own PYTHON_KEYRING_BACKEND switch
    except Exception:  # noqa: BLE001 - a bad variable: report below like "no keyring"
        chosen = None
    if chosen is None:
        chosen = keyring.get_keyring()
    fallback = not _usable(chosen)
    if fallback:
        chosen = FileKeyring()
    _resolved = (key, chosen, fallback)
    return chosen, fallback


def backend_label() -> str:
    """Where stored values live, for ``rf credentials list``."""
    kr, fallback = backend()
    if isinstance(kr, FileKeyring):
        label = f"file ({_display(kr.path)}, 0600)"
        return label + (" — no OS keyring found" if fallback else "")
    module = type(kr).__module__.rsplit(".", 1)[-1]
    if module == "chainer":
        inner = [b for b in getattr(kr, "backends", []) if _usable(b)]
        module = type(inner[0]).__module__.rsplit(".", 1)[-1] if inner else "chainer"
    return f"OS keyring ({module})"


class SecretStore:
    """The secrets of one workspace: keyring service ``rf/<workspace id>``."""

    def __init__(self, workspace_id: str) -> None:
        self.service = f"rf/{workspace_id}"

    def get(self, name: str) -> str | None:
        """The value: ``RF_SECRET_<NAME>`` first, then the keyring (None when unset)."""
        override = os.environ.get(env_var(name))
        if override:
            return override
        return self.stored(name)

    def stored(self, name: str) -> str | None:
        kr, _ = backend()
        try:
            return kr.get_password(self.service, name)
        except RfError:
            raise
        except Exception as exc:  # noqa: BLE001 - keyring backends raise anything (D-Bus, locked...)
            raise _keyring_error("read", name, exc) from None

    def set(self, name: str, value: str) -> None:
        kr, _ = backend()
        try:
            kr.set_password(self.service, name, value)
        except RfError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _keyring_error("store", name, exc) from None

    def delete(self, name: str) -> bool:
        """Remove the stored value; False if there was none."""
        kr, _ = backend()
        from keyring.errors import PasswordDeleteError

        try:
            kr.delete_password(self.service, name)
        except PasswordDeleteError:
            return False
        except RfError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _keyring_error("delete", name, exc) from None
        return True

    def storage(self, name: str) -> str:
        """Where credential ``name``'s value comes from (never the value)."""
        if os.environ.get(env_var(name)):
            return f"environment {env_var(name)}"
        if self.stored(name) is None:
            return f"missing — set it: rf credentials set {name}"
        return backend_label()


def _keyring_error(action: str, name: str, exc: BaseException) -> RfError:
    # The exception text of a keyring backend never holds the value we passed,
    # but keep only its class name to be sure nothing secret is echoed.
    return RfError(
        f"cannot {action} credential {name!r} in the keyring ({backend_label()}): {type(exc).__name__}",
        f"unlock your OS keyring, or set {env_var(name)} in the environment of the rf server",
    )
