"""The machine-readable contract: documents match the code, and a live server keeps them.

Schemathesis generates requests from the server's own `/api/openapi.json` and
checks every answer against it (status codes, content types, schemas, headers,
undeclared methods). The AsyncAPI file in docs/ must be what app/api/contract.py
generates, and real websocket frames must validate against the same schemas.
"""

from __future__ import annotations

import re
import subprocess
import sys

import jsonschema

from app.api import contract
from tests.conftest import ROOT, receive, send
from tests.ops_helpers import figure


def test_asyncapi_document_in_docs_is_generated_from_the_code():
    on_disk = (ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8")
    assert on_disk == contract.render(contract.asyncapi()), (
        "docs/asyncapi.json is stale: run `python -m app.api.contract > docs/asyncapi.json`")


def test_served_openapi_is_the_generated_one_and_every_schema_is_valid(server):
    assert server.get("/api/openapi.json") == contract.openapi()
    for name in contract.SCHEMAS:
        jsonschema.Draft202012Validator.check_schema(contract.resolved(name))


def test_real_frames_and_answers_match_the_schemas(server):
    plain, opted = server.connect("schema"), server.connect("opted", query="v=2")
    send(plain, room="general", text="hello", id="c-1")
    jsonschema.validate(receive(plain), contract.resolved("Message"))
    positioned = receive(opted)
    jsonschema.validate(positioned, contract.resolved("PositionedMessage"))
    resumed = server.connect("resumed", query="v=2&since=" + positioned["pos"])
    jsonschema.validate(receive(resumed), contract.resolved("Resumed"))
    gone = server.connect("gone", query="v=2&since=elsewhere:1")
    jsonschema.validate(receive(gone), contract.resolved("Gone"))
    send(plain, ping=True)
    jsonschema.validate(receive(plain), contract.resolved("Pong"))
    send(opted, room="general", text=" ", id="c-2")
    jsonschema.validate(receive(opted), contract.resolved("ErrorFrame"))
    for path, name in (("/api/settings", "Settings"), ("/api/rooms/general", "Room")):
        jsonschema.validate(server.get(path)["result"], contract.resolved(name))
    for message in server.get("/api/rooms/general/history")["result"]:
        jsonschema.validate(message, contract.resolved("Message"))


def test_schemathesis_finds_nothing_against_a_live_server(start_server, tmp_path):
    server = start_server()
    ws = server.connect("seed")  # a room to find, so the path operations reach real data
    send(ws, room="general", text="seed message", id="seed-1")
    receive(ws)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.base}/api/openapi.json",
         "--checks", "all", "--max-examples", "25", "--max-time", "20",
         "--generation-deterministic", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated", output)
    figure("schemathesis", operations=len([1 for p in contract.openapi()["paths"].values()
                                           for _ in p]),
           requests_generated=int(generated.group(1)) if generated else "?", failures=0)
    log = server.log()
    assert "level=error" not in log and "level=critical" not in log and "Traceback" not in log
