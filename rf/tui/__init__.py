"""The dashboard (``rf ui``): a Textual app over the Backend — the only package that imports textual.

Import :mod:`rf.tui.launch` (or :class:`rf.tui.app.RfApp`) explicitly; this
package's ``__init__`` stays empty so nothing heavy loads by accident.
"""
