"""Eval suites: cases that live with an agent (``agents/NAME/evals/``), scorers, a runner.

- :mod:`rf.evals.suite` reads and checks a suite (``load_suite``: what ``rf agents deploy``
  calls, so a bad suite never reaches a commit);
- :mod:`rf.evals.scorers` holds the built-in scorers (``expect: {scorer: argument}``);
- :mod:`rf.evals.judge` is the model-based ``judge`` scorer;
- :mod:`rf.evals.runner` runs cases in parallel through a given ``execute`` and scores them.

``rf.services.evals`` ties them to an environment (``rf eval``); the result models
(``EvalResult`` ...) are in rf.models, shared by both backends. Names load lazily: importing
``rf.evals`` costs nothing until a suite is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rf.evals.suite import Case, Suite, load_suite, suite_files

__all__ = ["Case", "Suite", "load_suite", "suite_files"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rf.evals import suite

        return getattr(suite, name)
    raise AttributeError(name)
