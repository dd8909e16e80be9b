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

The values are also what rf redacts from everything it stores and logs
(rf.logsetup.KNOWN): each Services registers a loader of its workspace's
values (every credential's, and every ``RF_SECRET_*`` override), which runs
on the first execution — not before, so commands that run no agent never
read the keyring for it — and again after a credential is set or deleted.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rf.config import check_name
from rf.errors import NotFound, RfError, UsageError
from rf.ids import utcnow
from rf.models import Credential, CredentialUsage, CredentialUser
from rf.services.base import ServiceContext

if TYPE_CHECKING:
    from rf.secrets import SecretStore

#: Secret values above this size are refused (a token, a password, a key — not a file).
MAX_SECRET_BYTES = 64 * 1024


class CredentialsService:
    """Credentials: metadata in the store, values in the keyring (or ``RF_SECRET_<NAME>``)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.store = ctx.store
        self.workspace = ctx.workspace
        self._register_known_secrets()

    # ------------------------------------------------------------ the secret store
    def _secrets(self) -> SecretStore:
        from rf.secrets import SecretStore

        return SecretStore(self._secrets_service())

    def _secrets_service(self) -> str:
        return self.workspace.id if self.workspace is not None else "in-memory"

    # ------------------------------------------------------------ values to redact (rf.logsetup.KNOWN)
    def _register_known_secrets(self) -> None:
        """(Re)load this workspace's credential values into the redactor on the next execution."""
        from rf.logsetup import KNOWN

        ref = weakref.ref(self)  # the process-wide registry must not keep these services alive

        def load() -> Iterable[str] | None:
            services = ref()
            if services is None or getattr(services.store, "_closed", False):
                return None
            return services._credential_values()

        KNOWN.register(self._secrets_service(), load)

    def _credential_values(self) -> list[str]:
        """Every value this workspace's credentials have here: ``RF_SECRET_*`` overrides and the
        keyring's (the keyring is not touched when no credential exists)."""
        values = [v for k, v in os.environ.items() if k.startswith("RF_SECRET_") and v]
        rows = self.store.credential_rows()
        if rows:
            secrets = self._secrets()
            for row in rows:
                try:
                    value = secrets.get(row["name"])
                except RfError as exc:  # a locked keyring, say: that one value cannot be redacted
                    logging.getLogger("rf.secrets").warning("cannot read credential %r to redact it: %s",
                                                            row["name"], exc.message)
                    continue
                if value:
                    values.append(value)
        return values

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
        with self.store.unit_of_work() as tx:
            tx.credentials.upsert_credential(name, description, utcnow())
            secrets.set(name, value)  # raises (and rolls the metadata back) when the keyring refuses
        self._register_known_secrets()  # the new value is redacted from the next execution on
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
        with self.store.unit_of_work() as tx:
            tx.credentials.delete_credential_row(name)
            secrets.delete(name)
        self._register_known_secrets()  # the old value is no longer redacted
        credential.storage = "deleted"
        return credential

    def credential_usage(self, name: str) -> CredentialUsage:
        """Connector instances (per environment), LLM providers and data sources (PostgreSQL
        passwords) that use credential ``name``. Providers and data sources are shared by both
        environments, so changing the credential affects production through them too."""
        check_name("credential", name)
        users = [CredentialUser("connector", slug, env) for env, slug in self.store.connectors_using_credential(name)]
        live = {slug for env, slug in self.store.connectors_using_credential(name) if env == "production"}
        # prepared production settings that would start using it when published
        users += [CredentialUser("connector", slug, "production", prepared=True)
                  for slug in self.store.prepared_connectors_using_credential(name) if slug not in live]
        providers = list(dict.fromkeys(self.store.providers_using_credential(name)))
        users += [CredentialUser("provider", p, None) for p in providers]
        users += [CredentialUser("data source", d, None) for d in self.store.data_sources_using_credential(name)]
        production = [_label(u) for u in users if u.env in (None, "production") and not u.prepared]
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
            from rf.logsetup import KNOWN

            KNOWN.add(self._secrets_service(), value)  # known from now on, even if set elsewhere
            return value
        if not self.store.credential_rows(name):
            raise NotFound(f"credential {name!r} is not set",
                           f"set it: rf credentials set {name}  (or {env_var(name)} in the server's environment)")
        raise NotFound(f"credential {name!r} has no stored value on this machine ({secrets.storage(name)})",
                       f"set it on this machine: rf credentials set {name}  (or {env_var(name)} in the "
                       "server's environment: servers on other hosts each need it)")

    def credential_exists(self, name: str) -> bool:
        """Known metadata, or an ``RF_SECRET_<NAME>`` override in this process (CI)."""
        import os

        from rf.secrets import env_var

        return bool(self.store.credential_rows(name)) or bool(os.environ.get(env_var(name)))

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
    if user.prepared:
        return f"{user.kind} {user.name} (production settings prepared in staging, not published)"
    return f"{user.kind} {user.name}" + (f" ({user.env})" if user.env else "")
