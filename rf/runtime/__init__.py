"""Out-of-process execution of agent code.

Agent code is user Python, so it runs in warm worker subprocesses rather than
in the host: a crash, ``sys.exit``, segfault, endless loop or flood of output
in an agent then fails one execution instead of taking the server down.

- :mod:`rf.runtime.protocol` frames JSON messages on the worker's pipes.
- :mod:`rf.runtime.worker` is the worker subprocess (``python -m rf.runtime.worker``).
- :mod:`rf.runtime.context` is the ``ctx`` object handlers receive.
- :mod:`rf.runtime.pool` keeps warm workers per ``(env, agent, commit)`` in the host.
- :mod:`rf.runtime.check` validates agent code in a throwaway subprocess.

This package module deliberately imports nothing: the worker imports
``rf.runtime.context`` and must stay light.
"""
