"""Tokens for search: one analyzer shared by the lexical index and the offline embedder.

Both sides of a search — chunks when they are stored, the query when it is
asked — must be cut into the same tokens, or nothing matches. So there is one
function, :func:`content_tokens`: casefold, strip accents, split on anything
that is not a letter or digit, drop English stop words, and apply a tiny
plural stemmer ("invoices" → "invoice", "policies" → "policy").

Term ids are the CRC-32 of the token as a signed 32-bit integer: stable
across processes and Python versions (``hash()`` is salted per process), and
an INTEGER column in DuckDB is four times smaller than the word. Two words
sharing an id (about one pair in 4 billion) would merely add a little noise
to the lexical score.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter

_WORD = re.compile(r"[^\W_]+")

#: Short English stop-word list: words that carry no topic. Dropping them
#: shrinks the term table by about a third and keeps the hashing embedder's
#: buckets for words that matter.
STOP_WORDS = frozenset(["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "s", "t", "d", "ll", "m", "re", "ve"])

_TERM_CACHE: dict[str, int] = {}
_STEM_CACHE: dict[str, str] = {}
_CACHE_MAX = 400_000


def normalize(text: str) -> str:
    """Casefold and strip accents ("Café" → "cafe"); ASCII text skips the costly part."""
    text = text.casefold()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text


def stem(word: str) -> str:
    """A deliberately tiny stemmer: plurals only. Cheap, predictable, never surprising."""
    found = _STEM_CACHE.get(word)
    if found is not None:
        return found
    out = word
    n = len(word)
    if n > 4 and word.endswith("ies"):
        out = word[:-3] + "y"
    elif n > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        out = word[:-1]
    if len(_STEM_CACHE) > _CACHE_MAX:
        _STEM_CACHE.clear()
    _STEM_CACHE[word] = out
    return out


def content_tokens(text: str) -> list[str]:
    """The words of ``text`` that carry meaning, normalised and stemmed, in order."""
    return [stem(w) for w in _WORD.findall(normalize(text)) if w not in STOP_WORDS]


def term_id(token: str) -> int:
    """Stable signed 32-bit id of a token (what the lexical index stores)."""
    found = _TERM_CACHE.get(token)
    if found is None:
        h = zlib.crc32(token.encode("utf-8"))
        found = h - (1 << 32) if h >= 1 << 31 else h
        if len(_TERM_CACHE) > _CACHE_MAX:
            _TERM_CACHE.clear()
        _TERM_CACHE[token] = found
    return found


def term_counts(tokens: list[str]) -> Counter[int]:
    """``{term id: occurrences}`` of a token list (one chunk's row group in the term table)."""
    return Counter(term_id(t) for t in tokens)


def query_terms(query: str) -> list[int]:
    """Distinct term ids of a search query, in order of appearance."""
    return list(dict.fromkeys(term_id(t) for t in content_tokens(query)))
