"""Knowledge-base building blocks, free of storage: text extraction per file
type, chunking with overlap, tokenization for the lexical (BM25) index and
embedders (the offline default and OpenAI-compatible providers).

Nothing here touches the database (that is :mod:`rf.store.knowledge`) or
knows about environments (knowledge bases are shared by both; see
:mod:`rf.services.knowledge`). Keeping these pieces pure makes each one
testable on its own and lets the benchmark drive them directly.

- :mod:`rf.kb.extract` — bytes of a ``.txt/.md/.html/.csv/.json/.jsonl/.pdf``
  file → text units (paragraphs, rows, records, pages).
- :mod:`rf.kb.chunking` — units → chunks of at most ``chunk_size`` characters,
  overlapping by ``overlap`` characters, cut at word boundaries.
- :mod:`rf.kb.text` — normalisation, tokens, stop words, stable term ids.
- :mod:`rf.kb.embed` — the offline hashing embedder and the provider client.
- :mod:`rf.kb.files` — which files of a folder are uploaded, and how a
  document is named (shared by ``rf kb upload`` and the dashboard).
"""
