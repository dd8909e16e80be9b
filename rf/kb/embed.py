"""Embedders: the offline default and OpenAI-compatible providers.

**The default embedder is not a neural model.** It is *feature hashing*:
each chunk's content words (see :mod:`rf.kb.text`), the pairs of adjacent
content words, and the character trigrams of each word are hashed (CRC-32)
into 384 signed buckets; bucket values get a sublinear ``log(1 + x)`` damping
and the vector is L2-normalised. Two texts are close when they share words,
word pairs or word *pieces* (so "invoice"/"invoicing" and small typos still
match). That is lexical-semantic similarity — no synonyms, no paraphrase, no
languages crossing over — but it needs no network and no model download,
runs at several thousand chunks per second, and is bit-for-bit deterministic
across machines and runs. For real semantic search, configure a provider
embedder on the KB (``--embedder provider:NAME:MODEL``).

The provider embedder calls ``POST {base_url}/embeddings`` (OpenAI's wire
format, which Ollama, vLLM, LM Studio, LiteLLM... also speak) in batches.

Embedders return ``numpy`` float32 matrices, one row per text: the store
hands them to DuckDB column by column, which is two orders of magnitude
faster than converting Python lists of floats.
"""

from __future__ import annotations

import itertools
import math
import zlib
from typing import TYPE_CHECKING, Any, Protocol

from rf.errors import UsageError
from rf.kb.text import content_tokens

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

DEFAULT = "default"
HASH_DIM = 384
#: Feature weights: a shared word counts most, a shared word pair adds
#: context, shared trigrams tolerate inflections and typos.
W_WORD = 1.0
W_PAIR = 0.7
W_TRIGRAM = 0.25


class Embedder(Protocol):
    spec: str  #: what the KB records, e.g. "default" or "provider:openai:text-embedding-3-small"

    def describe(self) -> str: ...

    def embed(self, texts: list[str]) -> Matrix: ...


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"default"`` → (default, None); ``"provider:NAME[:MODEL]"`` → (NAME, MODEL or None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("--embedder must be 'default' or 'provider:NAME[:MODEL]'")
    spec = spec.strip()
    if spec == DEFAULT:
        return DEFAULT, None
    kind, _, rest = spec.partition(":")
    if kind != "provider" or not rest:
        raise UsageError(f"unknown embedder {spec!r}",
                         "use 'default' (offline) or 'provider:NAME[:MODEL]', e.g. provider:openai:text-embedding-3-small")
    name, _, model = rest.partition(":")
    if not name:
        raise UsageError(f"embedder {spec!r} names no provider", "e.g. provider:openai:text-embedding-3-small")
    return name, (model or None)


def _bucket(feature: str) -> int:
    """Signed bucket of a feature: index in [0, D) for +1, index + D for -1 (one CRC-32)."""
    h = zlib.crc32(feature.encode("utf-8"))
    index = (h >> 1) % HASH_DIM
    return index + HASH_DIM if h & 1 else index


class HashingEmbedder:
    """The offline default: feature hashing into 384 dimensions (see the module docstring)."""

    spec = DEFAULT
    dim = HASH_DIM

    def __init__(self) -> None:
        # word -> (its unigram bucket, its trigram buckets). Words repeat a lot
        # (Zipf), so most of a chunk's features are one dict lookup away.
        self._words: dict[str, tuple[int, list[int]]] = {}
        self._pairs: dict[str, int] = {}

    def describe(self) -> str:
        return (f"default — offline feature hashing of words, word pairs and character trigrams into "
                f"{HASH_DIM} dims (lexical-semantic, not a neural model; no network)")

    def _word(self, word: str) -> tuple[int, list[int]]:
        found = self._words.get(word)
        if found is None:
            padded = f"<{word}>"
            found = (_bucket("w:" + word), [_bucket("c:" + padded[i:i + 3]) for i in range(len(padded) - 2)])
            if len(self._words) > 300_000:
                self._words.clear()
            self._words[word] = found
        return found

    def _pair(self, pair: str) -> int:
        found = self._pairs.get(pair)
        if found is None:
            if len(self._pairs) > 500_000:
                self._pairs.clear()
            found = self._pairs[pair] = _bucket("p:" + pair)
        return found

    def features(self, tokens: list[str]) -> tuple[list[int], list[int], list[int]]:
        """Signed buckets of one text's words, character trigrams and word pairs."""
        words = self._words
        pairs = self._pairs
        entries = [words.get(t) or self._word(t) for t in tokens]
        uni = [e[0] for e in entries]
        tri = [b for e in entries for b in e[1]]
        pair_buckets = [pairs.get(k) or self._pair(k) for k in map(" ".join, itertools.pairwise(tokens))]
        return uni, tri, pair_buckets

    def embed(self, texts: list[str]) -> Matrix:
        return self.embed_tokens([content_tokens(t) for t in texts])

    def embed_tokens(self, token_lists: list[list[str]]) -> Matrix:
        """Embed texts already cut into tokens (the upload path tokenizes once for both indexes)."""
        import numpy as np

        n = len(token_lists)
        if n == 0:
            return np.zeros((0, HASH_DIM), dtype=np.float32)
        width = 2 * HASH_DIM
        acc = np.zeros(n * width, dtype=np.float64)
        kinds: tuple[list[int], list[int], list[int]] = ([], [], [])
        counts: tuple[list[int], list[int], list[int]] = ([], [], [])
        for tokens in token_lists:
            for flat, count, feats in zip(kinds, counts, self.features(tokens), strict=True):
                flat += feats
                count.append(len(feats))
        rows = np.arange(n, dtype=np.int64)
        for flat, count, weight in zip(kinds, counts, (W_WORD, W_TRIGRAM, W_PAIR), strict=True):
            if flat:
                cells = np.repeat(rows, count) * width + np.asarray(flat, dtype=np.int64)
                acc += weight * np.bincount(cells, minlength=n * width)
        grid = acc.reshape(n, width)
        signed = grid[:, :HASH_DIM] - grid[:, HASH_DIM:]
        damped = np.sign(signed) * np.log1p(np.abs(signed))
        norms = np.linalg.norm(damped, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (damped / norms).astype(np.float32)


class ProviderEmbedder:
    """``POST {base_url}/embeddings`` of an OpenAI-compatible provider, in batches.

    The API key is passed in by the host (read from the credential store at
    call time) and scrubbed from every error message.
    """

    def __init__(self, provider: str, base_url: str, api_key: str | None, model: str, *,
                 timeout_s: float = 60.0, batch_size: int = 64, max_batch_chars: int = 200_000) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.model = model
        self.timeout_s = timeout_s
        #: Set when ``timeout_s`` is the time the calling execution has left (shorter than
        #: ``[llm] timeout_s``): a timeout then says so, with this hint.
        self.out_of_time_hint: str | None = None
        self.batch_size = batch_size
        self.max_batch_chars = max_batch_chars
        self.spec = f"provider:{provider}:{model}"

    def describe(self) -> str:
        return f"{self.spec} — OpenAI-compatible POST {self.base_url}/embeddings"

    def _error(self, message: str, hint: str | None = None) -> Exception:
        from rf.llm.types import ProviderError

        if self.api_key:
            message = message.replace(self.api_key, "***")
        return ProviderError(message, hint)

    def embed(self, texts: list[str]) -> Matrix:
        import numpy as np

        rows: list[list[float]] = []
        batch: list[str] = []
        size = 0
        for text in texts:
            text = text or " "  # the API refuses empty strings
            if batch and (len(batch) >= self.batch_size or size + len(text) > self.max_batch_chars):
                rows += self._request(batch)
                batch, size = [], 0
            batch.append(text)
            size += len(text)
        if batch:
            rows += self._request(batch)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    def _request(self, texts: list[str]) -> list[list[float]]:
        import httpx

        url = f"{self.base_url}/embeddings"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                response = client.post(url, headers=headers, json={"model": self.model, "input": texts})
        except httpx.TimeoutException:
            if self.out_of_time_hint:
                raise self._error(f"embedding provider {self.provider!r} did not answer before the execution's "
                                  "time ran out", self.out_of_time_hint) from None
            raise self._error(f"embedding provider {self.provider!r} did not answer within {self.timeout_s:g} s",
                              "the provider may be slow or overloaded; try again, or raise [llm] timeout_s") from None
        except httpx.HTTPError as exc:
            raise self._error(f"cannot reach embedding provider {self.provider!r} at {self.base_url}: "
                              f"{type(exc).__name__}: {exc}",
                              "check the provider's base URL (rf providers list) and that it is running") from None
        if response.status_code >= 400:
            body = " ".join(response.text.split())[:300]
            hint = {401: "the API key was refused; check the provider's credential",
                    404: "check the base URL and that the provider serves /embeddings with this model"}.get(
                response.status_code, "check the model name (it must be an embedding model)")
            raise self._error(f"embedding provider {self.provider!r} answered HTTP {response.status_code}: {body}",
                              hint)
        try:
            data: Any = response.json()
            items = sorted(data["data"], key=lambda item: item.get("index", 0))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise self._error(f"embedding provider {self.provider!r} answered with unexpected data: "
                              f"{response.text[:200]!r}", "it must speak OpenAI's /embeddings format") from None
        if len(vectors) != len(texts) or not vectors:
            raise self._error(f"embedding provider {self.provider!r} returned {len(vectors)} embeddings "
                              f"for {len(texts)} texts")
        dims = {len(v) for v in vectors}
        if len(dims) != 1 or 0 in dims:
            raise self._error(f"embedding provider {self.provider!r} returned vectors of mixed sizes {sorted(dims)}")
        if any(not math.isfinite(x) for v in vectors for x in v):
            raise self._error(f"embedding provider {self.provider!r} returned non-finite numbers")
        return vectors
