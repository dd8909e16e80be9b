"""The service layer: every domain rule of rf lives here.

``Services`` is what both backends expose: ``LocalBackend`` calls it
in-process, the server calls it for ``HttpBackend``. The environment rules are
enforced here — whatever the surface, a mutation aimed at production that is
not a release is refused by :func:`require_staging`.
"""

from rf.models import require_staging
from rf.services.canary import CanaryService
from rf.services.connectors import ConnectorsService
from rf.services.core import CoreServices
from rf.services.credentials import CredentialsService
from rf.services.datasources import DataSourcesService
from rf.services.eval_suites import EvalSuitesService
from rf.services.evals import EvalsService
from rf.services.keys import KeysService
from rf.services.knowledge import KnowledgeService
from rf.services.prompts import PromptsService
from rf.services.providers import ProvidersService
from rf.services.releases import ReleasesService
from rf.services.replay import ReplayService
from rf.services.retention import RetentionService
from rf.services.sessions import SessionsService
from rf.services.traces import TracesService
from rf.services.triggers import TriggersService
from rf.services.uploads import UploadsService
from rf.services.users import UsersService, guard_routes


class Services(
    PromptsService,
    ConnectorsService,
    CredentialsService,
    ProvidersService,
    SessionsService,
    TracesService,
    TriggersService,
    CanaryService,
    ReleasesService,
    KnowledgeService,
    DataSourcesService,
    KeysService,
    UploadsService,
    RetentionService,
    EvalsService,
    EvalSuitesService,
    ReplayService,
    UsersService,
    CoreServices,
):
    """All of rf's domain operations over one store (see each mixin)."""


# Every method that is a management route checks the caller's role (rf.services.users).
guard_routes(Services)


__all__ = ["Services", "require_staging"]
