"""The custom spans a worker sends, checked by one typed decode (imported on first use).

A worker sends the custom spans of an execution (``with ctx.trace.span(...)``)
already in the form the store keeps them: a JSON array of rows in
``rf.store.traces.BATCH_FIELDS`` order, as one JSON text. The host checks
that text against :data:`SpanRow` in one msgspec decode (shape, types, name
and error lengths; span ids are checked for the whole batch at once) and,
when nothing about the spans needs changing, stores the text as it came: a
custom span costs the host about a microsecond instead of being decoded
generically, rebuilt and encoded again. See
:meth:`rf.services.traces.ExecutionTrace.add_spans`.

This module imports msgspec, so it is imported only when a worker first
sends spans (the CLI never pays for it).
"""

from typing import Annotated, Any, Literal

import msgspec

#: Longest custom span name, and span error (same limits as rf.services.traces).
NAME_MAX = 200
ERROR_MAX = 2000

#: 16 characters (that they are lowercase hex digits is checked for a whole batch at once).
SpanId = Annotated[str, msgspec.Meta(min_length=16, max_length=16)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX)]
Error = Annotated[str, msgspec.Meta(max_length=ERROR_MAX)]

#: ``[span_id, parent_id, "custom", name, start_ns, end_ns, status, error, {attributes}]``; a
#: None parent is the root (the host fills it in). Tuples, so a batch's columns are one zip().
SpanRow = tuple[SpanId, SpanId | None, Literal["custom"], Name, int, int, Literal["ok", "error"], Error | None,
                dict[str, Any]]

decode_rows = msgspec.json.Decoder(list[SpanRow]).decode
#: What decode_rows raises for text that is not JSON or not span rows.
Invalid = (msgspec.DecodeError, msgspec.ValidationError)
