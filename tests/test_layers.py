"""Import contracts: layering you can see, and a fast CLI start-up."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

RF = Path(__file__).resolve().parent.parent / "rf"

# third-party module -> the only rf package allowed to import it
OWNERS = {
    "duckdb": "rf/store",
    "litestar": "rf/server",
    "uvicorn": "rf/server",
    "textual": "rf/tui",
    "typer": "rf/cli",
    "click": "rf/cli",
}
HEAVY = ("duckdb", "litestar", "uvicorn", "textual", "httpx", "typer", "rich")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (type-only imports never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_owning_package_imports_each_library() -> None:
    offenders = []
    for path in RF.rglob("*.py"):
        rel = path.relative_to(RF.parent).as_posix()
        for module in _imports(path):
            owner = OWNERS.get(module)
            if owner and not rel.startswith(owner + "/"):
                offenders.append(f"{rel} imports {module} (only {owner} may)")
    assert offenders == []


def test_lower_layers_never_import_upper_layers() -> None:
    forbidden = {
        "rf/store": ("rf.services", "rf.server", "rf.cli", "rf.tui", "rf.client", "rf.runtime"),
        "rf/services": ("rf.server", "rf.cli", "rf.tui", "rf.client"),
        "rf/runtime": ("rf.services", "rf.store", "rf.server", "rf.cli", "rf.tui", "rf.client"),
        "rf/models.py": ("rf.services", "rf.store", "rf.server", "rf.cli", "rf.tui", "rf.client", "rf.runtime"),
        "rf/errors.py": ("rf.",),
        "rf/llm": ("rf.services", "rf.store", "rf.server", "rf.cli", "rf.tui", "rf.client"),
    }
    offenders = []
    for path in RF.rglob("*.py"):
        rel = path.relative_to(RF.parent).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        mods = set()
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module)
            elif isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
        for prefix, banned in forbidden.items():
            if rel.startswith(prefix):
                offenders += [f"{rel} imports {m}" for m in mods if any(m.startswith(b) for b in banned)]
    assert offenders == []


def _loaded_after(code: str) -> list[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in json.loads(out.strip().splitlines()[-1]) if m in HEAVY]


def test_version_imports_nothing_heavy() -> None:
    assert _loaded_after("import sys; sys.argv = ['rf', '--version']\nfrom rf.cli import main\nmain()") == []


@pytest.mark.parametrize("module", ["rf", "rf.client", "rf.models", "rf.config", "rf.api", "rf.runtime.context"])
def test_headless_modules_are_light(module: str) -> None:
    assert _loaded_after(f"import {module}") == []


def test_help_does_not_import_the_store_or_server() -> None:
    code = "import sys; sys.argv = ['rf', '--help']\nfrom rf.cli.app import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    loaded = _loaded_after(code)
    assert "duckdb" not in loaded and "litestar" not in loaded and "textual" not in loaded


# ------------------------------------------------------------ services see repositories, never the database
SERVICES = RF / "services"
#: Store calls that hand out the database itself (a cursor, a transaction, raw query results).
DATABASE_CALLS = {"cursor", "query", "query_one", "transaction", "execute", "executemany", "fetchone", "fetchall"}
SQL = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE)\s")
#: What services may use on the store besides the repositories' methods (not part of any one domain).
#: (``shared``: several servers may use the store, replicas; ``announce_change``: tell them to drop caches;
#: ``live_replicas``: the servers sharing it, for ``rf status``; ``after_unlock``: what waits for them)
STORE_LEVEL = {"unit_of_work", "write_lock", "writer", "path", "schema_version", "shared", "announce_change",
               "live_replicas", "after_unlock"}


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.add(id(node.value))
    return out


def test_services_never_touch_cursors_or_sql() -> None:
    """rf/services reads and writes through rf/store/interfaces.py: no duckdb (not even for a type),
    no cursor or transaction of the store's, no SQL text."""
    offenders = []
    for path in sorted(SERVICES.rglob("*.py")):
        rel = path.relative_to(RF.parent).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):  # type-only imports included: a service must not name duckdb at all
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] == "duckdb" for m in modules):
                    offenders.append(f"{rel}:{node.lineno} imports duckdb")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in DATABASE_CALLS:  # on the store, or on a cursor it handed out
                    offenders.append(f"{rel}:{node.lineno} calls {ast.unparse(node.func.value)}.{node.func.attr}()")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                  and SQL.match(node.value)):
                offenders.append(f"{rel}:{node.lineno} passes SQL: {node.value[:40]!r}")
    assert offenders == [], "move it into a repository method in rf/store/<domain>.py:\n" + "\n".join(offenders)


def _service_store_uses() -> dict[str, set[str]]:
    """``{member: {service file, ...}}`` of what services use on the store and its repositories
    (``self.store.X``, ``store.X``, ``self.store.prompts.X``, ``tx.prompts.X``, ``repos.prompts.X``)."""
    from rf.store.interfaces import DOMAINS

    domains = "|".join(DOMAINS)
    pattern = re.compile(rf"(?:^|\.)(?:store|tx|repos)\.(?:(?:{domains})\.)?([a-z_]+)$")
    uses: dict[str, set[str]] = {}
    for path in sorted(SERVICES.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):  # code only: docstrings and comments name modules like rf.store.traces
            if isinstance(node, ast.Attribute):
                match = pattern.search(ast.unparse(node))
                if match and match.group(1) not in DOMAINS:
                    uses.setdefault(match.group(1), set()).add(path.name)
    return uses


def test_repository_protocols_list_exactly_what_services_use() -> None:
    from rf.store.interfaces import DOMAINS

    declared = {name for proto in DOMAINS.values() for name in _members(proto)}
    uses = _service_store_uses()
    undeclared = sorted(f"{m} (used in {', '.join(sorted(files))})" for m, files in uses.items()
                        if m not in declared and m not in STORE_LEVEL)
    assert undeclared == [], "declare these in a Protocol of rf/store/interfaces.py: " + "; ".join(undeclared)
    unused = sorted(declared - set(uses))
    assert unused == [], "no service uses these: remove them from rf/store/interfaces.py: " + ", ".join(unused)


def _members(proto: type) -> list[str]:
    return [n for n in vars(proto) if not n.startswith("_")]


def test_the_duckdb_store_satisfies_every_repository_protocol() -> None:
    """Each ``store.<domain>`` is its Protocol (names at runtime; ``mypy`` checks the types, since
    each property is annotated with its Protocol), with parameters a caller of the Protocol can pass."""
    from rf.store import Store
    from rf.store.interfaces import DOMAINS, Repositories

    with Store.open(None) as store:
        assert isinstance(store, Repositories)
        problems = []
        for attr, proto in DOMAINS.items():
            repo = getattr(store, attr)
            assert isinstance(repo, proto), f"store.{attr} is not a {proto.__name__}"
            for name in _members(proto):
                declared = inspect.getattr_static(proto, name)
                if isinstance(declared, property):
                    continue
                wanted = list(inspect.signature(declared).parameters.values())[1:]  # without self
                given = inspect.signature(getattr(repo, name)).parameters
                for p in wanted:
                    have = given.get(p.name)
                    if have is None or have.kind != p.kind or (p.default is not p.empty and have.default is have.empty):
                        problems.append(f"{proto.__name__}.{name}: parameter {p}")
                extra = [p for n, p in given.items() if n not in {w.name for w in wanted}
                         and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
                problems += [f"{proto.__name__}.{name}: the store also requires {p}" for p in extra]
        assert problems == []


def test_a_unit_of_work_is_all_or_nothing_and_writes_need_one() -> None:
    from rf.ids import utcnow
    from rf.store import Store

    with Store.open(None) as store:
        with pytest.raises(RuntimeError, match="outside a unit of work"):
            store.credentials.upsert_credential("loose", None, utcnow())
        with pytest.raises(ValueError), store.unit_of_work() as tx:
            tx.credentials.upsert_credential("first", None, utcnow())
            tx.credentials.upsert_credential("second", None, utcnow())
            raise ValueError("half-way")
        assert store.credentials.credential_rows() == []
        with store.unit_of_work() as tx:
            tx.credentials.upsert_credential("first", "kept", utcnow())
        assert [r["name"] for r in store.credentials.credential_rows()] == ["first"]


def _service_modules() -> list[Path]:
    return sorted((RF / "services").glob("*.py"))


def test_no_service_reaches_another_by_attribute_name() -> None:
    """Domains call each other through explicit dependencies, never ``getattr(self, "name")``
    (a string or an f-string) or ``cast("Services", self)``; a domain service keeps its state in
    attributes its ``__init__`` sets, not in ``self.__dict__`` entries made on first use."""
    import sys

    from rf.services import FACADE

    split = {Path(sys.modules[cls.__module__].__file__ or "").name for cls, _ in FACADE.values()}
    offenders = []
    for path in _service_modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(RF.parent).as_posix()}:{getattr(node, 'lineno', 0)}"
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"
                    and isinstance(node.args[1], ast.Constant | ast.JoinedStr)):
                offenders.append(f"{where}: {ast.unparse(node)}")
            elif (isinstance(node, ast.Attribute) and node.attr == "__dict__" and isinstance(node.value, ast.Name)
                    and node.value.id == "self" and path.name in split):
                offenders.append(f"{where}: self.__dict__")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cast"
                    and len(node.args) == 2 and isinstance(node.args[1], ast.Name) and node.args[1].id == "self"):
                offenders.append(f"{where}: {ast.unparse(node)}")
    assert offenders == []


def test_domain_services_are_plain_classes_that_declare_their_dependencies() -> None:
    """Each domain service the facade holds is a class of its own (no base but object, so no
    domain inherits another's methods), whose ``__init__`` names each dependency with its type:
    the shared context, another domain service, or a narrow protocol (rf.services.base)."""
    import typing

    from rf.services import FACADE, Services
    from rf.services import base as service_base
    from rf.services.canary import RoutingCache
    from rf.services.releases import CommitUses, Publisher
    from rf.services.resource_use import ResourceUses

    classes = {cls for cls, _ in FACADE.values()}
    # Besides services: narrow protocols of one, and shared read-only helpers over the store.
    allowed = classes | {service_base.ServiceContext, service_base.AgentRuns, service_base.TraceReads,
                         service_base.ReleaseReads, ResourceUses, Publisher, CommitUses, RoutingCache}
    assert len(classes) == len(FACADE) >= 20
    problems = []
    for attr, (cls, names) in FACADE.items():
        if cls.__bases__ != (object,):
            problems.append(f"{cls.__name__} inherits {[b.__name__ for b in cls.__bases__]}")
        if "__init__" not in vars(cls):
            problems.append(f"{cls.__name__} has no __init__ of its own")
            continue
        hints = typing.get_type_hints(cls.__init__, localns={c.__name__: c for c in allowed})
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        if not params or hints.get(params[0]) is not service_base.ServiceContext:
            problems.append(f"{cls.__name__}.__init__ does not take the ServiceContext first")
        for p in params:
            if hints.get(p) not in allowed:
                problems.append(f"{cls.__name__}.__init__({p}: {hints.get(p)}) is not a declared service dependency")
        for name in names:
            if not callable(getattr(cls, name, None)):
                problems.append(f"Services.{name} forwards to {cls.__name__}.{name}, which does not exist")
            for base in Services.__mro__[1:]:
                if name in vars(base):
                    problems.append(f"Services.{name} is forwarded to {attr} and defined by {base.__name__} too")
    assert problems == []


def test_the_facade_guards_every_route_and_serves_every_host_method() -> None:
    """Every route of rf/api.py is a method of the facade; the one a call ends in (the facade's
    own, or a domain service's it forwards to) is the guarded one, so calls between domains pass
    the role check too. Every ``@host_method`` of every domain service reaches agent code."""
    from rf import api
    from rf.services import FACADE, Services
    from rf.services.host import collect
    from rf.store import Store

    services = Services(Store.open(None), None)
    try:
        unguarded = []
        for route in api.ROUTES:
            fn = getattr(Services, route.name)
            attr = getattr(fn, "__rf_delegate__", None)
            owner = services if attr is None else getattr(services, attr)
            if not getattr(getattr(owner, route.name), "__rf_guarded__", False):
                unguarded.append(route.name)
        assert unguarded == []
        table = services.host_methods()
        for attr, (cls, _) in FACADE.items():
            for name, method in collect(cls).items():
                assert table[name] == getattr(getattr(services, attr), method), name
    finally:
        services.close()
        services.store.close()


ARCHITECTURE = RF.parent / "docs" / "architecture.md"


def _documented_arrows() -> tuple[set[str], dict[str, set[str]]]:
    """The light modules and the table of allowed arrows in docs/architecture.md."""
    text = ARCHITECTURE.read_text()
    light_text = text.split("<!-- light -->", 1)[1].split("<!-- /light -->", 1)[0]
    light = {_norm(u) for u in re.findall(r"`(rf/[\w.]+)`", light_text)}
    table = text.split("<!-- arrows -->", 1)[1].split("<!-- /arrows -->", 1)[0]
    arrows: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`rf/"):
            arrows[_norm(cells[0].strip("`"))] = {_norm(u) for u in re.findall(r"`(rf/[\w.]+)`", cells[1])}
    return light, arrows


def _unit_of(module: str) -> str:
    """``rf.store.db`` -> ``rf/store``; ``rf.models`` -> ``rf/models``; ``rf`` -> ``rf``."""
    parts = module.split(".")
    return "rf" if len(parts) == 1 else f"rf/{parts[1]}"


def _norm(unit: str) -> str:
    """``rf/models.py`` and ``rf/models`` name the same unit (the docs write either)."""
    return unit.removesuffix(".py")


def _rf_imports(path: Path) -> set[str]:
    """The rf units a module imports at run time (lazy imports inside functions included)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rf":
                found.update(_unit_of(f"rf.{a.name}") for a in node.names)
            elif node.module.startswith("rf."):
                found.add(_unit_of(node.module))
        elif isinstance(node, ast.Import):
            found.update(_unit_of(a.name) for a in node.names if a.name.startswith("rf."))
    return found


def _light_names(light: set[str]) -> set[str]:
    return light | {"rf"}  # `from rf import Context` (the agent-facing package) is light too


def test_every_layer_follows_the_arrows_written_in_the_architecture() -> None:
    light, arrows = _documented_arrows()
    assert {"rf/cli", "rf/tui", "rf/server", "rf/services", "rf/store", "rf/compose"} <= arrows.keys()
    units = {_norm(p.name) for p in RF.iterdir()}
    for unit in list(light) + list(arrows):
        assert unit.split("/", 1)[1] in units, f"docs/architecture.md names {unit}, which does not exist"
    allowed_light = _light_names(light)
    offenders = []
    for path in RF.rglob("*.py"):
        rel = path.relative_to(RF.parent).as_posix()
        parts = rel.split("/")
        unit = _norm(f"rf/{parts[1]}" if len(parts) > 2 else rel)
        if unit in ("rf/__init__", "rf/__main__"):
            continue  # the agent-facing package and `python -m rf`: entry points
        if unit in light:
            may = allowed_light
        elif unit in arrows:
            may = allowed_light | arrows[unit]
        else:
            offenders.append(f"{unit} is neither a light module nor a layer in docs/architecture.md")
            continue
        offenders += [f"{rel} imports {target}" for target in sorted(_rf_imports(path) - may - {unit})]
    assert sorted(set(offenders)) == []


def test_no_surface_builds_the_store_services_or_server_itself() -> None:
    """The CLI, the dashboard and the client go through the composition root (rf/compose.py)."""
    offenders = []
    for folder in ("cli", "tui"):
        for path in (RF / folder).rglob("*.py"):
            text = path.read_text()
            for needle in ("Services(", "open_store(", "Store.open(", "start_in_thread("):
                if needle in text:
                    offenders.append(f"{path.relative_to(RF.parent)}: {needle}")
    text = (RF / "client.py").read_text()
    offenders += [f"rf/client.py: {n}" for n in ("Services(", "open_store(") if n in text]
    assert offenders == []
