"""The browser's annotation records (apps/web/static/js/record.js) are byte for byte what the
Python side encodes, and a record signed by a non-extractable WebCrypto key in real Chromium
verifies and enters a curation log. The server here has the pages and no API."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from browserkit import chromium, served
from fastapi import FastAPI

from phalanx.apps.web import pages
from phalanx.engine.curation.log import CurationLog
from phalanx.engine.curation.records import (
    GENESIS,
    Annotation,
    RecordRefused,
    SignedAnnotation,
    decode_annotation,
)
from phalanx.engine.curation.tasks import Task, TaskSet
from phalanx.net.codec import encode_record
from phalanx.net.crypto import sha256, verify_signature

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not "
                             "installed (pip install playwright)").expect

_rng = random.Random(19)


def _bytes32() -> bytes:
    return bytes(_rng.randrange(256) for _ in range(32))


# boundaries of msgpack's shortest forms: fixint/uint8/16/32/64, fixstr/str8/str16,
# fixarray/array16, and multi-byte UTF-8
BODIES = [
    Annotation(_bytes32(), "single_choice", _bytes32(), 0, GENESIS, (1,), "", 0),
    Annotation(_bytes32(), "multi_label", _bytes32(), 127, _bytes32(), (0, 2, 5), "", 128),
    Annotation(_bytes32(), "rating", _bytes32(), 255, _bytes32(), (256,), "", 65_535),
    Annotation(_bytes32(), "multi_label", _bytes32(), 65_536, _bytes32(),
               (*range(0, 4000, 200), 70_000), "", 1_765_432_100_123),
    Annotation(_bytes32(), "free_text", _bytes32(), 2**32 + 5, _bytes32(), (),
               "x" * 31, 2**53 - 1),
    Annotation(_bytes32(), "free_text", _bytes32(), 4_294_967_295, _bytes32(), (),
               "y" * 32, 0),
    Annotation(_bytes32(), "free_text", _bytes32(), 3, _bytes32(), (),
               "héllo wörld, 👋 ünïcode " * 20, 1),
    Annotation(_bytes32(), "free_text", _bytes32(), 3, _bytes32(), (), "z" * 70_000, 1),
    Annotation(_bytes32(), "pairwise", _bytes32(), 9, _bytes32(), tuple(range(15)), "", 2),
    Annotation(_bytes32(), "pairwise", _bytes32(), 9, _bytes32(), tuple(range(16)), "", 2),
]

TASK = Task.make(id="q1", kind="single_choice", text="Is the sky blue?", options=["yes", "no"])


def _js_fields(body: Annotation) -> dict[str, Any]:
    return {"task": body.task.hex(), "kind": body.kind, "annotator": body.annotator.hex(),
            "seq": body.seq, "prev": body.prev.hex(), "choice": list(body.choice),
            "text": body.text, "clientTimeMs": body.client_time_ms}


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    app = FastAPI()
    app.include_router(pages.router)
    with served(app) as base, chromium() as browser:
        tab = browser.new_page()
        tab.goto(base + "/login")  # any page of the app: a secure context on loopback
        assert tab.evaluate("window.isSecureContext")
        yield tab


ENCODE = """async (cases) => {
  const { encodeBody } = await import("/static/js/record.js");
  const { fromHex, toHex } = await import("/static/js/bytes.js");
  return cases.map((f) => toHex(encodeBody({ ...f, task: fromHex(f.task),
    annotator: fromHex(f.annotator), prev: fromHex(f.prev) })));
}"""


def test_browser_body_bytes_equal_python_encoding(page: Any) -> None:
    got = page.evaluate(ENCODE, [_js_fields(b) for b in BODIES])
    for body, hex_bytes in zip(BODIES, got, strict=True):
        assert hex_bytes == encode_record(body).hex(), (body.kind, body.seq)


def test_encoder_refuses_what_no_record_holds(page: Any) -> None:
    problems = page.evaluate("""async () => {
      const { encode } = await import("/static/js/msgpack.js");
      const { encodeBody } = await import("/static/js/record.js");
      const out = [];
      for (const bad of [1.5, 2 ** 60, {}, null]) {
        try { encode(bad); out.push("accepted"); } catch (e) { out.push(e.name); }
      }
      try { encodeBody({ task: new Uint8Array(31) }); out.push("accepted"); }
      catch (e) { out.push(e.message); }
      return out;
    }""")
    assert problems == ["RangeError", "RangeError", "TypeError", "TypeError",
                        "task must be 32 bytes"]


SIGN = """async ({ task, seq, prev }) => {
  const { generateKey, saveKey, loadKey } = await import("/static/js/keys.js");
  const { signRecord } = await import("/static/js/record.js");
  const { fromHex, toBase64, toHex } = await import("/static/js/bytes.js");
  await saveKey("alice", await generateKey());
  const key = await loadKey("alice");  // from IndexedDB, as a page reload would find it
  let extractable = true;
  try { await crypto.subtle.exportKey("pkcs8", key.privateKey); } catch { extractable = false; }
  const signed = await signRecord(key.privateKey, { task: fromHex(task), kind: "single_choice",
    annotator: key.publicKey, seq, prev: fromHex(prev), choice: [1], text: "",
    clientTimeMs: Date.now() });
  return { record: toBase64(signed.record), digest: toHex(signed.digest),
           publicKey: key.publicHex, extractable };
}"""


def test_a_record_signed_in_chromium_verifies_and_enters_a_log(page: Any) -> None:
    got = page.evaluate(SIGN, {"task": TASK.digest.hex(), "seq": 0, "prev": GENESIS.hex()})
    assert got["extractable"] is False  # the private key never leaves WebCrypto
    raw = base64.b64decode(got["record"])
    record = decode_annotation(raw)
    assert record.encode() == raw  # the whole record is canonical too
    assert record.digest.hex() == got["digest"] == sha256(encode_record(record.body)).hex()
    assert record.body.annotator.hex() == got["publicKey"]
    assert verify_signature(record.body.annotator,
                            b"phalanx/annotation/v1" + record.digest, record.signature)
    log = CurationLog(TaskSet([TASK]))
    assert log.add(raw) == record.digest
    assert log.head(record.body.annotator) == (1, record.digest)

    # altered by a node on the way: the other answer under the same signature is refused
    altered = SignedAnnotation(replace(record.body, choice=(0,)), record.signature)
    with pytest.raises(RecordRefused) as refused:
        CurationLog(TaskSet([TASK])).add(altered.encode())
    assert refused.value.reason == "bad_signature"


def test_a_page_whose_api_fails_says_so_and_offers_a_retry(page: Any) -> None:
    """This server has the pages but no API: the dashboard's first call fails, and the page
    says so instead of staying half drawn."""
    base = page.url.rsplit("/", 1)[0]
    page.goto(base + "/dashboard")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This page could not load")
    expect(alert.get_by_role("button", name="Try again")).to_be_visible()
