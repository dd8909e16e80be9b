"""Credentials (shared by both environments): metadata in DuckDB, secrets in the keyring.

A credential is a name (``crm-token``), a description and a secret value. The
value goes to the OS keyring through :mod:`rf.secrets` and nowhere else: not
into DuckDB, not into any model this layer returns, not into an error
message. Connectors and LLM providers refer to a credential by name and ask
:meth:`CredentialsService.credential_secret` for the value in the host
process, at call time.

Credentials are shared: staging and production connectors may use the same
one, so setting or deleting it changes production at once. The service
exposes :meth:`credential_usage` so every surface can say so before doing it
(the CLI asks for confirmation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rf.config import check_name
from rf.errors import NotFound, UsageError
from rf.ids import utcnow
from rf.models import Credential, CredentialUsage, CredentialUser
from rf.services.base import ServiceBase

if TYPE_CHECKING:
    from rf.secrets import SecretStore

#: Secret values above this size are refused (a token, a password, a key — not a file).
MAX_SECRET_BYTES = 64 * 1024


class CredentialsService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""

    # ------------------------------------------------------------ the secret store
    def _secrets(self) -> SecretStore:
        from rf.secrets import SecretStore

        return SecretStore(self.workspace.id if self.workspace is not None else "in-memory")

    # ------------------------------------------------------------ public API
    def set_credential(self, name: str, value: str, description: str | None = None) -> Credential:
        """Create or rotate credential ``name``. Affects production users at once (see credential_usage).

        ``description=None`` keeps the current description when rotating.
        The value is validated and stored in the keyring inside the metadata
        transaction: if the keyring refuses it, no metadata is written.
        """
        check_name("credential", name)
        if not isinstance(value, str) or not value:
            raise UsageError(f"credential {name!r} needs a non-empty value",
                             f"type it at the prompt, or pipe it: rf credentials set {name} --from-stdin")
        if len(value.encode("utf-8")) > MAX_SECRET_BYTES:
            raise UsageError(f"the value of credential {name!r} is larger than {MAX_SECRET_BYTES // 1024} KiB",
                             "credentials hold tokens and passwords, not files")
        if "\n" in value or "\r" in value or "\x00" in value:
            raise UsageError(f"the value of credential {name!r} contains a line break or NUL byte",
                             "credentials are single-line values; check what you piped in")
        if description is not None and not isinstance(description, str):
            raise UsageError("description must be a string")
        secrets = self._secrets()
        with self.store.transaction() as cur:
            self.store.upsert_credential(cur, name, description, utcnow())
            secrets.set(name, value)  # raises (and rolls the metadata back) when the keyring refuses
        return self.get_credential(name)

    def get_credential(self, name: str) -> Credential:
        rows = self.store.credential_rows(name)
        if not rows:
            raise self._unknown_credential(name)
        return self._credential(rows[0])

    def list_credentials(self) -> list[Credential]:
        """Every credential with where its value lives and who uses it — never the value."""
        return [self._credential(row) for row in self.store.credential_rows()]

    def delete_credential(self, name: str) -> Credential:
        """Remove the metadata and the stored value. Users of it fail from now on (with a clear error)."""
        credential = self.get_credential(name)
        secrets = self._secrets()
        with self.store.transaction() as cur:
            self.store.delete_credential_row(cur, name)
            secrets.delete(name)
        credential.storage = "deleted"
        return credential

    def credential_usage(self, name: str) -> CredentialUsage:
        """Connector instances (per environment), LLM providers and data sources (PostgreSQL
        passwords) that use credential ``name``. Providers and data sources are shared by both
        environments, so changing the credential affects production through them too."""
        check_name("credential", name)
        users = [CredentialUser("connector", slug, env) for env, slug in self.store.connectors_using_credential(name)]
        providers = list(dict.fromkeys([*self.store.providers_using_credential(name),
                                        *self._credential_users_extra(name)]))
        users += [CredentialUser("provider", p, None) for p in providers]
        users += [CredentialUser("data source", d, None) for d in self.store.data_sources_using_credential(name)]
        production = [_label(u) for u in users if u.env in (None, "production")]
        return CredentialUsage(name=name, exists=bool(self.store.credential_rows(name)), users=users,
                               production=production)

    # ------------------------------------------------------------ internal (host process only)
    def credential_secret(self, name: str) -> str:
        """The value of credential ``name``, for connectors and providers in the host process.

        Deliberately not in rf/api.py: no surface can read a secret back.
        ``RF_SECRET_<NAME>`` in the host's environment wins (CI); otherwise
        the credential must exist and have a stored value.
        """
        from rf.secrets import env_var

        secrets = self._secrets()
        value = secrets.get(name)
        if value:
            return value
        if not self.store.credential_rows(name):
            raise NotFound(f"credential {name!r} is not set",
                           f"set it: rf credentials set {name}  (or {env_var(name)} in the server's environment)")
        raise NotFound(f"credential {name!r} has no stored value on this machine ({secrets.storage(name)})",
                       f"set it again: rf credentials set {name}")

    def _credential_exists(self, name: str) -> bool:
        """Known metadata, or an ``RF_SECRET_<NAME>`` override in this process (CI)."""
        import os

        from rf.secrets import env_var

        return bool(self.store.credential_rows(name)) or bool(os.environ.get(env_var(name)))

    def _credential_users_extra(self, name: str) -> list[str]:
        """Hook: names of other shared things (LLM providers) that use credential ``name``.

        Cooperative: a mixin later in the MRO (providers) may define it too;
        its answer is included. The store's defensive ``providers`` query
        covers the common case without any override.
        """
        parent = getattr(super(), "_credential_users_extra", None)
        return list(parent(name)) if parent is not None else []

    # ------------------------------------------------------------ helpers
    def _credential(self, row: dict[str, str]) -> Credential:
        usage = self.credential_usage(row["name"])
        return Credential(
            name=row["name"], description=row["description"], storage=self._secrets().storage(row["name"]),
            created_at=row["created_at"], rotated_at=row["rotated_at"],
            used_by=[_label(u) for u in usage.users],
        )

    def _unknown_credential(self, name: str) -> NotFound:
        known = [r["name"] for r in self.store.credential_rows()]
        hint = f"set it: rf credentials set {name}"
        if known:
            hint += f"  (known: {', '.join(known)})"
        return NotFound(f"unknown credential {name!r}", hint)


def _label(user: CredentialUser) -> str:
    return f"{user.kind} {user.name}" + (f" ({user.env})" if user.env else "")
