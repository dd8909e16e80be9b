"""Knowledge-base benchmark: upload throughput and hybrid-search latency at 100,000 chunks.

Run: .venv/bin/python bench/kb.py [--quick] [--chunks N] [--queries N] [--json]

Drives the service layer in-process on a real DuckDB file in a throw-away
directory (what ``rf serve`` runs; the HTTP hop adds a few ms per call and is
measured by bench/invoke.py). The corpus is synthetic: documents of ~20
chunks of Zipf-distributed pseudo-words (so common and rare terms behave as
in real text), uploaded 50 files per call with the offline embedder. A few
documents carry a planted "needle" sentence; each needle query must find its
document first, so the numbers are for a search that actually works.

Reported: upload chunks/s (extract + chunk + tokenize + embed + stage +
commit, including term-table re-sorts), and search latency median / p95 over
random 2–4-word queries, with and without a metadata filter.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK_SIZE = 1000
CHUNKS_PER_DOC = 20
FILES_PER_CALL = 50


def vocabulary(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(words)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 chunks instead of 100,000")
    parser.add_argument("--chunks", type=int, default=None, help="target number of chunks")
    parser.add_argument("--queries", type=int, default=60, help="search queries per kind")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", metavar="DIR", help="keep the store in DIR (must exist) instead of a temp dir")
    args = parser.parse_args()
    target = args.chunks or (10_000 if args.quick else 100_000)

    from rf.services import Services
    from rf.store import Store

    rng = random.Random(7)
    vocab = vocabulary(30_000, rng)
    weights = [1 / (i + 1) for i in range(len(vocab))]
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    words_per_doc = 1500  # ~11,000 characters: about 20 chunks of 1,000 with 200 overlap
    est_docs = max(1, target // CHUNKS_PER_DOC)
    needles = {i: f"the {vocab[-1 - i]} {vocab[-100 - i]} protocol" for i in range(0, est_docs, max(1, est_docs // 20))}

    with tempfile.TemporaryDirectory(prefix="rf-bench-kb-") as tmp:
        if args.keep:
            tmp = args.keep
        store = Store.open(Path(tmp) / "rf.duckdb")
        services = Services(store, None)
        services.create_kb("bench", chunk_size=CHUNK_SIZE, overlap=200)
        gen_s = 0.0
        started = time.perf_counter()
        chunks = 0
        batch: dict[str, bytes] = {}
        d = -1
        while chunks < target:
            d += 1
            g0 = time.perf_counter()
            words = rng.choices(vocab, cum_weights=cum, k=words_per_doc)
            paragraphs = [" ".join(words[i:i + 60]) + "." for i in range(0, len(words), 60)]
            if d in needles:
                paragraphs.insert(len(paragraphs) // 2, needles[d].capitalize() + ".")
            batch[f"docs/{d:06d}.txt"] = "\n\n".join(paragraphs).encode()
            gen_s += time.perf_counter() - g0
            if len(batch) == FILES_PER_CALL or chunks + len(batch) * CHUNKS_PER_DOC >= target:
                meta = {"shard": str(d % 4)}
                result = services.kb_upload("bench", batch, meta)
                chunks += result.chunks_added
                batch = {}
                if not args.json:
                    elapsed = time.perf_counter() - started - gen_s
                    print(f"\r  uploaded {chunks:>7} chunks  ({chunks / elapsed:,.0f} chunks/s)", end="",
                          file=sys.stderr, flush=True)
        upload_s = time.perf_counter() - started - gen_s
        if not args.json:
            print(file=sys.stderr)
        kb = services.get_kb("bench")

        cpu: list[float] = []

        def timed(query: str, flt: dict[str, str] | None = None) -> tuple[float, list[str]]:
            t0, c0 = time.perf_counter(), time.process_time()
            hits = services.search_kb("bench", query, k=5, filter=flt).hits
            cpu.append((time.process_time() - c0) * 1000)
            return (time.perf_counter() - t0) * 1000, [h.path for h in hits]

        timed("warm up the caches")
        needles = {i: n for i, n in needles.items() if i <= d}
        found = 0
        for d, needle in needles.items():
            _, paths = timed(needle)
            found += bool(paths) and paths[0] == f"docs/{d:06d}.txt"
        plain = [timed(" ".join(rng.choices(vocab[:5000], k=rng.randint(2, 4))))[0] for _ in range(args.queries)]
        filtered = [timed(" ".join(rng.choices(vocab[:5000], k=rng.randint(2, 4))), {"shard": "1"})[0]
                    for _ in range(args.queries)]
        services.close()
        store.close()

    results = {
        "chunks": kb.chunks, "documents": kb.documents, "embedder": kb.embedder, "dim": kb.dim,
        "upload_seconds": round(upload_s, 2), "upload_chunks_per_s": round(kb.chunks / upload_s, 1),
        "search_ms_median": round(statistics.median(plain), 2), "search_ms_p95": round(percentile(plain, 0.95), 2),
        "filtered_search_ms_median": round(statistics.median(filtered), 2),
        "filtered_search_ms_p95": round(percentile(filtered, 0.95), 2),
        "search_cpu_ms_median": round(statistics.median(cpu), 2),
        "needles_found_first": f"{found}/{len(needles)}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"kb bench: {kb.chunks:,} chunks in {kb.documents:,} documents (embedder {kb.embedder}, {kb.dim} dims)")
        print(f"  upload: {results['upload_chunks_per_s']:,.0f} chunks/s ({upload_s:.1f} s)")
        print(f"  search (k=5, hybrid): median {results['search_ms_median']} ms, p95 {results['search_ms_p95']} ms")
        print(f"  search with a metadata filter: median {results['filtered_search_ms_median']} ms, "
              f"p95 {results['filtered_search_ms_p95']} ms")
        print(f"  search CPU time (all DuckDB threads): median {results['search_cpu_ms_median']} ms")
        print(f"  needle queries ranked their document first: {results['needles_found_first']}")
        print(f"  load average during the run: {results['load_average']} (on {os.cpu_count()} cores)")
    return 0 if found == len(needles) else 1


if __name__ == "__main__":
    raise SystemExit(main())
