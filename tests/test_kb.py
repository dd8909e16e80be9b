"""Knowledge bases (shared by both environments): extraction, chunking, atomic
uploads, hybrid search, embedders (offline and a real local HTTP provider),
agents searching from staging and production, and the CLI."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import HELLO_TOML, run_rf, run_rf_here, write_agent
from rf.client import open_local
from rf.config import snapshot_dir
from rf.errors import Conflict, NotFound, UsageError
from rf.kb import chunking, embed, extract
from rf.kb.text import content_tokens
from rf.llm.types import ProviderError
from rf.services.host import HostCall

DOCS = {
    "faq/refunds.md": b"# Refunds\n\nCustomers can request a refund within 30 days of purchase. "
                      b"The refund is paid back to the original card.\n",
    "faq/shipping.txt": b"Shipping takes 3 to 5 business days. Express shipping costs extra.",
    "faq/privacy.html": b"<html><head><title>Privacy</title><style>p{color:red}</style></head><body>"
                        b"<h1>Privacy</h1><p>We never sell your personal data.</p>"
                        b"<script>track()</script></body></html>",
    "data/prices.csv": b"product,price\nwidget,10\ngadget,25\n",
    "data/faq.json": b'[{"q": "How do I reset my password?", "a": "Use the forgot-password link."}]',
}


@pytest.fixture
def b(ws: Any) -> Iterator[Any]:
    backend = open_local(ws)
    yield backend
    backend.close()


# ---------------------------------------------------------------- extraction and chunking

def test_extract_each_type() -> None:
    html = extract.extract("p.html", DOCS["faq/privacy.html"])
    assert [u.text for u in html.units] == ["Privacy", "We never sell your personal data."]
    assert html.meta == {"title": "Privacy"}  # scripts and styles are gone
    csv_doc = extract.extract("p.csv", DOCS["data/prices.csv"])
    assert csv_doc.header == "product,price" and [u.text for u in csv_doc.units] == ["widget,10", "gadget,25"]
    js = extract.extract("f.json", DOCS["data/faq.json"])
    assert len(js.units) == 1 and "reset my password" in js.units[0].text
    jl = extract.extract("f.jsonl", b'{"a": 1}\n\n{"a": 2}\n')
    assert [u.meta["line"] for u in jl.units] == [1, 3]
    with pytest.raises(UsageError, match="unsupported file type"):
        extract.extract("x.docx", b"...")
    with pytest.raises(UsageError, match="not valid JSON"):
        extract.extract("bad.json", b"{nope")
    with pytest.raises(UsageError, match="binary"):
        extract.extract("bin.txt", b"\x00\x01\x02")
    with pytest.raises(UsageError, match="readable PDF"):
        extract.extract("bad.pdf", b"%PDF-1.4 garbage")


def _pdf(pages: list[str]) -> bytes:
    """A small real PDF with one text line per page (built by hand; pypdf reads it back)."""
    objects: list[bytes] = []
    kids = []
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        page_no, content_no = 4 + 2 * i, 5 + 2 * i
        kids.append(f"{page_no} 0 R")
        objects.append(f"{page_no} 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents "
                       f"{content_no} 0 R /Resources << /Font << /F1 3 0 R >> >> >> endobj\n".encode())
        objects.append(f"{content_no} 0 obj << /Length {len(content)} >> stream\n".encode() + content
                       + b"\nendstream endobj\n")
    head = [b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n",
            f"2 0 obj << /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >> endobj\n".encode(),
            b"3 0 obj << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> endobj\n"]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for obj in head + objects:
        offsets.append(out.tell())
        out.write(obj)
    xref = out.tell()
    out.write(f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer << /Size {len(offsets) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def test_pdf_pages_become_chunk_metadata(b: Any) -> None:
    doc = extract.extract("manual.pdf", _pdf(["Install the widget first", "Then calibrate the gadget"]))
    assert doc.meta["pages"] == 2 and [u.meta["page"] for u in doc.units] == [1, 2]
    b.create_kb("manuals", chunk_size=50, overlap=0)
    b.kb_upload("manuals", {"manual.pdf": _pdf(["Install the widget first", "Then calibrate the gadget"])})
    hit = b.search_kb("manuals", "calibrate gadget", k=1).hits[0]
    assert hit.path == "manual.pdf" and hit.metadata["page"] == 2 and "calibrate" in hit.text


def test_chunking_overlap_and_metadata() -> None:
    words = [f"word{i}" for i in range(400)]
    doc = extract.Extracted("text", [extract.Unit(" ".join(words))])
    chunks = chunking.chunk(doc, chunk_size=200, overlap=50)
    assert len(chunks) > 5 and all(len(c.text) <= 200 for c in chunks)
    for prev, nxt in itertools.pairwise(chunks):
        shared = set(prev.text.split()[-5:]) & set(nxt.text.split()[:8])
        assert shared, "consecutive chunks overlap"
    assert " ".join(dict.fromkeys(w for c in chunks for w in c.text.split())) == " ".join(words)  # nothing lost
    # Record types: the header opens every chunk, overlap repeats whole rows, rows carry their numbers.
    rows = "\n".join(f"item{i},{i}" for i in range(60))
    csv_doc = extract.extract("t.csv", f"name,value\n{rows}\n".encode())
    cchunks = chunking.chunk(csv_doc, chunk_size=120, overlap=30)
    assert all(c.text.startswith("name,value\n") and len(c.text) <= 120 for c in cchunks)
    assert all(line.count(",") == 1 for c in cchunks for line in c.text.splitlines())
    assert cchunks[0].meta["row"] == 1 and cchunks[1].meta["row"] < cchunks[0].meta["row_end"] + 1
    with pytest.raises(UsageError, match="overlap"):
        chunking.chunk(doc, chunk_size=100, overlap=80)


# ---------------------------------------------------------------- embedders

def test_offline_embedder_is_deterministic_across_processes() -> None:
    e = embed.HashingEmbedder()
    v = e.embed(["Refunds are paid to the original card"])
    assert v.shape == (1, 384) and abs(float((v * v).sum()) - 1) < 1e-5
    code = ("from rf.kb.embed import HashingEmbedder;"
            "print(HashingEmbedder().embed(['Refunds are paid to the original card'])[0].tolist())")
    other = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout)
    assert other == v[0].tolist()
    near, far = e.embed(["refund to card", "shipping times in europe"])
    assert float(v[0] @ near) > float(v[0] @ far)
    assert content_tokens("The Invoices") == ["invoice"]


class FakeEmbeddings:
    """A real HTTP server speaking OpenAI's /embeddings, with a tiny *semantic* vocabulary:
    "reimbursement" lands on the refund axis although it shares no word with "refund"."""

    AXES = (("refund", "money back", "reimburse"), ("ship", "deliver", "parcel"), ("password", "login"),
            ("privacy", "personal data"), ("widget", "gadget", "price"))

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.delay_s = 0.0  # how long each answer takes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(outer.delay_s)
                outer.requests.append(body)
                outer.auth.append(self.headers.get("Authorization"))
                if self.path != "/v1/embeddings" or body.get("model") != "tiny-embed":
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "model not found"}}')
                    return
                data = [{"index": i, "embedding": outer.vector(t)} for i, t in enumerate(body["input"])]
                raw = json.dumps({"data": data, "model": "tiny-embed"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def vector(self, text: str) -> list[float]:
        t = text.lower()
        return [1.0 if any(w in t for w in axis) else 0.0 for axis in self.AXES] + [0.01]

    def __enter__(self) -> FakeEmbeddings:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_embeddings() -> Iterator[FakeEmbeddings]:
    with FakeEmbeddings() as server:
        yield server


def test_provider_embedder_over_real_http_and_reembedding(b: Any, fake_embeddings: FakeEmbeddings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from rf.secrets import env_var

    monkeypatch.setenv(env_var("emb-key"), "sk-test-123")
    b.add_provider("emb", "openai", base_url=fake_embeddings.url, credential="emb-key")
    b.create_kb("docs")
    b.kb_upload("docs", DOCS)
    assert b.get_kb("docs").dim == 384
    # "reimbursement" shares no word with any document: the offline embedder has no lexical match.
    assert all(h.lexical_score == 0 for h in b.search_kb("docs", "reimbursement", k=3).hits)

    with pytest.raises(UsageError, match="name the embedding model"):
        b.set_kb_embedder("docs", "provider:emb")
    change = b.set_kb_embedder("docs", "provider:emb:tiny-embed")
    chunks = b.get_kb("docs").chunks
    assert change.reembedded == chunks and change.kb.dim == 6 and change.kb.embedder == "provider:emb:tiny-embed"
    assert "provider:emb:tiny-embed" in change.kb.embedder_description
    assert sum(len(r["input"]) for r in fake_embeddings.requests) == chunks  # every chunk re-embedded
    assert set(fake_embeddings.auth) == {"Bearer sk-test-123"}
    hit = b.search_kb("docs", "reimbursement", k=1).hits[0]
    assert hit.path == "faq/refunds.md" and hit.lexical_score == 0 and hit.vector_score > 0.5
    # New uploads use the provider too; a model the provider does not know fails cleanly, nothing changes.
    with pytest.raises(Exception, match="HTTP 404"):
        b.set_kb_embedder("docs", "provider:emb:no-such-model")
    assert b.get_kb("docs").embedder == "provider:emb:tiny-embed"
    assert b.search_kb("docs", "reimbursement", k=1).hits[0].path == "faq/refunds.md"
    back = b.set_kb_embedder("docs", "default")
    assert back.kb.dim == 384 and b.search_kb("docs", "refund", k=1).hits[0].path == "faq/refunds.md"
    # An agent's search gets only the time its execution has left (not [llm] timeout_s), and
    # the provider's key is redacted from that execution's trace.
    b.set_kb_embedder("docs", "provider:emb:tiny-embed")
    fake_embeddings.delay_s = 2.0
    call = HostCall(env="production", agent="helper", execution_id="ex_test")
    call.start(time.monotonic() + 0.3)
    with pytest.raises(ProviderError, match="did not answer before the execution's time ran out") as info:
        b.services.kb_search_host(call, "docs", "reimbursement")
    assert "agents/helper/agent.toml" in (info.value.hint or "")
    assert "sk-test-123" in call.state["secrets"]
    fake_embeddings.delay_s = 0.0
    with pytest.raises(UsageError, match="no /embeddings"):
        b.create_kb("other", embedder="provider:mock:x")
    with pytest.raises(NotFound):
        b.create_kb("other", embedder="provider:ghost:x")


# ---------------------------------------------------------------- uploads and search

def test_upload_unchanged_changed_and_search(b: Any) -> None:
    b.create_kb("docs", chunk_size=300, overlap=50)
    first = b.kb_upload("docs", DOCS, {"lang": "en"})
    assert {f.status for f in first.files} == {"added"} and first.committed and first.chunks_added >= 5
    again = b.kb_upload("docs", DOCS, {"lang": "en"})
    assert {f.status for f in again.files} == {"unchanged"} and again.chunks_added == 0
    kb = b.get_kb("docs")
    assert kb.documents == 5 and kb.embedder == "default" and "not a neural model" in kb.embedder_description

    for query, path in (("refund to my card", "faq/refunds.md"), ("how long does shipping take", "faq/shipping.txt"),
                        ("reset password", "data/faq.json"), ("sell personal data", "faq/privacy.html"),
                        ("gadget price", "data/prices.csv")):
        hits = b.search_kb("docs", query, k=3).hits
        assert hits[0].path == path, (query, [h.path for h in hits])
        assert hits[0].lexical_score == 1.0 and hits[0].vector_score > 0 and hits[0].score > 0
    top = b.search_kb("docs", "refund", k=1).hits[0]
    assert top.metadata["lang"] == "en" and top.metadata["type"] == "markdown" and top.chunk == 0

    # A changed file replaces its chunks (no leftovers from the old version).
    changed = b.kb_upload("docs", {"faq/refunds.md": b"# Refunds\n\nRefunds now take 60 days. Store credit only."},
                          {"lang": "en"})
    assert [f.status for f in changed.files] == ["updated"] and changed.chunks_removed >= 1
    texts = [h.text for h in b.search_kb("docs", "refund", k=10).hits if h.path == "faq/refunds.md"]
    assert texts and all("60 days" in t for t in texts)
    assert b.get_kb("docs").documents == 5
    # Same bytes, new metadata: re-staged with the new metadata.
    meta = b.kb_upload("docs", {"faq/shipping.txt": DOCS["faq/shipping.txt"]}, ["lang=fr", "team=ops"])
    assert meta.files[0].status == "updated"

    # Filters: custom metadata, type, path globs, several values of one key (any of them).
    assert {h.path for h in b.search_kb("docs", "shipping refund", k=10, filter={"lang": "fr"}).hits} == \
        {"faq/shipping.txt"}
    assert {h.path for h in b.search_kb("docs", "refund shipping", k=10, filter=["type=text"]).hits} == \
        {"faq/shipping.txt"}
    assert {h.path for h in b.search_kb("docs", "refund shipping", k=10, filter={"path": "faq/*"}).hits} <= \
        {"faq/refunds.md", "faq/shipping.txt", "faq/privacy.html"}
    both = b.search_kb("docs", "refund shipping", k=10, filter={"lang": ["en", "fr"]}).hits
    assert {"faq/refunds.md", "faq/shipping.txt"} <= {h.path for h in both}
    assert b.search_kb("docs", "refund", filter={"lang": "de"}).hits == []
    with pytest.raises(UsageError, match="key=value"):
        b.search_kb("docs", "refund", filter=["lang"])
    with pytest.raises(UsageError, match="empty"):
        b.search_kb("docs", "  ")

    removed = b.kb_remove_document("docs", "faq/privacy.html")
    assert removed.removed == ["faq/privacy.html"] and removed.kb.documents == 4
    assert all(h.path != "faq/privacy.html" for h in b.search_kb("docs", "privacy personal data", k=10).hits)
    with pytest.raises(NotFound, match="no document"):
        b.kb_remove_document("docs", "faq/privacy.html")


def test_bad_input_stores_nothing(b: Any) -> None:
    b.create_kb("docs")
    with pytest.raises(UsageError, match="unsupported file type"):
        b.kb_upload("docs", {"a.md": b"fine", "b.exe": b"MZ"})
    with pytest.raises(UsageError, match="not valid JSON"):
        b.kb_upload("docs", {"a.md": b"fine", "broken.json": b"{"})
    assert b.get_kb("docs").documents == 0 and b.kb_documents("docs") == []
    # A multi-call batch that fails half-way leaves nothing either.
    b.kb_upload("docs", {"one.md": b"first file"}, batch="up_test1")
    with pytest.raises(UsageError):
        b.kb_upload("docs", {"two.pdf": b"not a pdf"}, batch="up_test1")
    assert b.kb_commit("docs", "up_test1").files == []  # the failure aborted the whole batch
    assert b.kb_documents("docs") == []
    # A good batch becomes visible only on commit.
    b.kb_upload("docs", {"one.md": b"first file"}, batch="up_test2")
    assert b.search_kb("docs", "first file").hits == []
    done = b.kb_commit("docs", "up_test2")
    assert [f.status for f in done.files] == ["added"] and b.search_kb("docs", "first file").hits
    with pytest.raises(NotFound, match="unknown knowledge base"):
        b.kb_upload("ghost", {"a.md": b"x"})
    with pytest.raises(NotFound):
        b.search_kb("ghost", "x")
    with pytest.raises(Conflict):
        b.create_kb("docs")
    with pytest.raises(UsageError):
        b.create_kb("Bad Name")
    with pytest.raises(UsageError, match="reserved"):
        b.kb_upload("docs", {"a.md": b"x"}, {"path": "x"})
    b.delete_kb("docs")
    assert b.list_kbs() == []


AGENT = '''
def handle(input, ctx):
    hits = ctx.kb("docs").search(input["q"], k=2, filter={"lang": "en"})
    rows = ctx.data("sales").query("SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY region")
    return {"env": ctx.env, "top": hits[0]["path"], "score": hits[0]["score"], "rows": rows}
'''


def test_agents_in_both_environments_share_kb_and_data(ws: Any, b: Any) -> None:
    write_agent(ws.root, "reader", AGENT, HELLO_TOML)
    b.deploy("reader", snapshot_dir(ws.root / "agents" / "reader"), "v1", "ada")
    b.promote("reader", "ada")
    b.create_kb("docs")
    b.kb_upload("docs", DOCS, {"lang": "en"})
    (ws.root / "sales.csv").write_text("region,amount\neu,10\nus,20\neu,5\n")
    b.add_data_source("sales", "file", str(ws.root / "sales.csv"))
    outputs = {}
    for env in ("staging", "production"):
        ex = b.invoke(env, "reader", {"q": "refund to my card"})
        assert ex.status == "succeeded", ex.error
        outputs[env] = ex.output
        spans = {s.kind: s for s in b.get_trace(ex.id).spans}
        assert spans["kb"].attributes["kb"] == "docs" and spans["kb"].attributes["results"] == 2
        assert spans["kb"].attributes["k"] == 2
        assert spans["data"].attributes["source"] == "sales" and spans["data"].attributes["rows"] == 2
    assert outputs["staging"]["env"] == "staging" and outputs["production"]["env"] == "production"
    for key in ("top", "score", "rows"):
        assert outputs["staging"][key] == outputs["production"][key]
    assert outputs["production"]["top"] == "faq/refunds.md"
    assert outputs["production"]["rows"] == [{"region": "eu", "total": 15}, {"region": "us", "total": 20}]
    # Uses are recorded, so removing the KB can say which production agents break.
    assert {(u.env, u.agent) for u in b.get_kb("docs").used_by} == {("staging", "reader"), ("production", "reader")}
    assert "production agents reader" in b.delete_kb("docs").warnings[0]
    failed = b.invoke("production", "reader", {"q": "refund"})
    assert failed.status == "failed" and "unknown knowledge base 'docs'" in (failed.error or "")


# ---------------------------------------------------------------- CLI (and the HTTP API through a server)

# `rf` as a real subprocess (run_rf) for a few commands, the rest in-process (run_rf_here, same entry point)
def test_cli_flow(ws: Any) -> None:
    root = ws.root
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    for rel, data in DOCS.items():
        (docs / Path(rel).name).write_bytes(data)
    (docs / "sub" / "logo.png").write_bytes(b"\x89PNG")
    r = run_rf("kb", "create", "docs", "--chunk-size", "400", "--overlap", "80", cwd=root)
    assert r.returncode == 0, r.stderr
    r = run_rf_here("kb", "upload", "docs", "docs", "--meta", "lang=en", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "5 added" in r.stderr and "skipped 1 file" in r.stderr and "logo.png" in r.stderr
    r = run_rf_here("kb", "upload", "docs", "docs/refunds.md", "--meta", "lang=en", cwd=root)
    assert r.returncode == 0 and "unchanged" in r.stderr
    r = run_rf_here("kb", "search", "docs", "refund to my card", "-k", "2", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["hits"][0]["path"] == "docs/refunds.md" and len(result["hits"]) <= 2
    assert {"score", "vector_score", "lexical_score", "metadata", "chunk", "text"} <= set(result["hits"][0])
    r = run_rf_here("kb", "show", "docs", cwd=root)
    assert r.returncode == 0 and "offline feature hashing" in r.stdout and "docs/prices.csv" in r.stdout
    # Bad input: clear errors, exit codes, nothing stored.
    (root / "notes.docx").write_bytes(b"PK")
    r = run_rf("kb", "upload", "docs", "docs/shipping.txt", "notes.docx", cwd=root)
    assert r.returncode == 2 and "unsupported file type" in r.stderr and "supported types" in r.stderr
    r = run_rf_here("kb", "search", "docs", "x", "--filter", "nokey", cwd=root)
    assert r.returncode == 2 and "key=value" in r.stderr
    r = run_rf_here("kb", "search", "ghost", "x", cwd=root)
    assert r.returncode == 1 and "unknown knowledge base 'ghost'" in r.stderr
    r = run_rf_here("kb", "remove-document", "docs", "docs/shipping.txt", cwd=root)
    assert r.returncode == 0 and "4 documents left" in r.stderr, r.stderr
    r = run_rf_here("kb", "delete", "docs", "--yes", cwd=root)
    assert r.returncode == 0 and "deleted knowledge base docs" in r.stderr


def test_upload_through_a_server_in_pieces(ws: Any, server: Any) -> None:
    root = ws.root
    big = root / "big.txt"
    paragraph = "Invoices are archived for ten years. " * 20
    big.write_text("\n\n".join(f"Section {i}. {paragraph}" for i in range(1200)))  # ~900 KiB: sent in pieces
    (root / "small.md").write_text("The zebra protocol handles retries.")
    assert big.stat().st_size > 600 * 1024
    assert run_rf_here("kb", "create", "docs", cwd=root).returncode == 0
    r = run_rf("kb", "upload", "docs", "big.txt", "small.md", cwd=root)
    assert r.returncode == 0, r.stderr
    r = run_rf_here("kb", "search", "docs", "zebra protocol", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hits"][0]["path"] == "small.md"
    r = run_rf_here("kb", "show", "docs", "--json", cwd=root)
    docs = {d["path"]: d for d in json.loads(r.stdout)["documents"]}
    assert docs["big.txt"]["size"] == big.stat().st_size and docs["big.txt"]["chunks"] > 500
    r = run_rf_here("kb", "upload", "docs", "big.txt", cwd=root)
    assert r.returncode == 0 and "unchanged" in r.stderr
