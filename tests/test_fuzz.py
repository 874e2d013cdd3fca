"""Property-based fuzzing of websocket frames against a real server, with a bystander watching.

A `?v=2` client sends what hypothesis makes: arbitrary JSON, message-shaped
objects with wrong types, huge numbers, deep nesting, raw text with control
characters, binary frames, invalid UTF-8. The oracle is the contract, not our
parser: a valid message comes back as a Message, `{"ping": true}` as a Pong,
anything else as exactly one ErrorFrame (with the frame's `id` when it had
one), and invalid UTF-8 closes with 1007 (RFC 6455). After every frame a
plain bystander posts a probe and must get it back (every receive has a
timeout); it must never see anything but Messages. The server log must show no
traceback. How long the probes took is a figure, not a pass mark.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import jsonschema
import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api import contract
from tests.conftest import receive, receive_close, send
from tests.ops_helpers import figure, metric

MAX_MESSAGE_LENGTH, MAX_ROOM_TITLE_LENGTH = 10500, 50
EXAMPLES = 400

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
texts = st.text(max_size=60) | st.sampled_from(["  padded  ", "\t\n", "Ёлки", "x" * 11000])
message_like = st.fixed_dictionaries({}, optional={
    "room": texts | json_values, "text": texts | json_values,
    "id": st.none() | st.text(max_size=12) | json_values,
    "ping": st.booleans() | json_values, "sender": json_values, "created": json_values})

frames = st.one_of(
    st.tuples(st.just("json"), message_like),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("text"), st.text(max_size=80)),  # mostly not JSON; control chars too
    st.tuples(st.just("deep"), st.integers(1, 30000)),
    st.tuples(st.just("bignum"), st.integers(4301, 20000)),  # past int_max_str_digits
    st.tuples(st.just("surrogate"), st.sampled_from(["\\ud800", "\\udfff", "a\\ud83dz"])),
    st.tuples(st.just("binary"), st.binary(max_size=64)),
    st.tuples(st.just("bad_utf8"), st.binary(min_size=1, max_size=32).map(lambda b: b + b"\xff")),
)


def expected_answer(value) -> tuple[str, object]:
    """What the contract says a decoded JSON frame gets: ("message", draft) | ("pong",) | ("error", id)."""
    if not isinstance(value, dict):
        return "error", None
    if value.get("ping") is True:  # ping wins, whatever else the frame holds
        return "pong", None
    id = value.get("id")
    if id is not None and not isinstance(id, str):
        return "error", None
    room, text = value.get("room"), value.get("text")
    if isinstance(room, str) and isinstance(text, str) and room.strip() and text.strip():
        return "message", value
    return "error", id or None


def encode(kind: str, payload) -> tuple[int, bytes | str, object]:
    """(opcode, data, decoded JSON value or a marker) for one generated frame."""
    text = websocket.ABNF.OPCODE_TEXT
    if kind == "json":
        return text, json.dumps(payload, ensure_ascii=False), payload
    if kind == "text":
        try:
            return text, payload, json.loads(payload)
        except ValueError:
            return text, payload, _NOT_JSON
    if kind == "deep":
        return text, "[" * payload + "]" * payload, _NOT_JSON  # too deep for any JSON parser here
    if kind == "bignum":
        return text, '{"room":"r","text":"t","n":' + "9" * payload + "}", _NOT_JSON
    if kind == "surrogate":
        return text, '{"room":"r","text":"' + payload + '","id":"s"}', _NOT_JSON
    if kind == "binary":
        return websocket.ABNF.OPCODE_BINARY, payload, _NOT_JSON
    return text, payload, _BAD_UTF8


_NOT_JSON, _BAD_UTF8 = object(), object()


@pytest.mark.parametrize("mode", ["embedded", "gunicorn-gevent"])
def test_fuzzed_frames_are_answered_per_contract_and_a_bystander_never_waits(start_server, mode):
    server = start_server(mode, max_messages_per_second=100000)
    bystander = server.connect("bystander")
    fuzzer = [server.connect("fuzzer", query="v=2")]
    tried, latencies, probes = Counter(), [], [0]

    def probe() -> None:
        probes[0] += 1
        probe_id = f"probe-{probes[0]}"
        started = time.monotonic()
        send(bystander, room="probe", text="are you there", id=probe_id)
        while True:
            frame = receive(bystander, timeout=5)
            jsonschema.validate(frame, MESSAGE)  # a plain client sees only messages
            if frame.get("id") == probe_id:
                break
        latencies.append(time.monotonic() - started)

    def answer_of_fuzzer() -> dict:
        while True:
            frame = receive(fuzzer[0], timeout=5)
            if frame.get("sender", {}).get("username") != "bystander":
                return frame

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(frames)
    def check(frame):
        kind, payload = frame
        opcode, data, value = encode(kind, payload)
        fuzzer[0].send(data, opcode=opcode)
        tried[kind] += 1
        if value is _BAD_UTF8:
            assert receive_close(fuzzer[0])[0] == 1007
            fuzzer[0] = server.connect("fuzzer", query="v=2")
        else:
            answer = answer_of_fuzzer()
            expected, detail = (("error", "s" if kind == "surrogate" else None)
                                if value is _NOT_JSON else expected_answer(value))
            if expected == "message":
                jsonschema.validate(answer, POSITIONED_MESSAGE)  # a ?v=2 client: with `pos`
                assert answer["text"] == detail["text"].strip()[:MAX_MESSAGE_LENGTH]
                assert answer["room"].lower() == (
                    detail["room"].strip()[:MAX_ROOM_TITLE_LENGTH].lower())
                assert answer.get("id") == (detail.get("id") or None)
                assert answer["sender"] == {"username": "fuzzer"}
            elif expected == "pong":
                assert answer == {"pong": True}
            else:
                jsonschema.validate(answer, ERROR_FRAME)
                assert answer.get("id") == detail, (answer, frame)
        probe()

    check()
    rss_before = metric(server, "process_resident_memory_bytes")
    huge = "x" * (10 * 1024 * 1024)  # 10 MB in one frame: refused from its header, 1009
    fuzzer[0].send(json.dumps({"room": "r", "text": huge}))  # the server drains it: no reset
    assert receive_close(fuzzer[0])[0] == 1009
    tried["10MB"] += 1
    probe()
    rss_after = metric(server, "process_resident_memory_bytes")
    assert rss_after - rss_before < 20 * 1024 * 1024
    assert "Traceback" not in server.log() and "level=error" not in server.log()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    figure(f"fuzz[{mode}]", frames_tried=sum(tried.values()), **dict(sorted(tried.items())),
           bystander_probes=len(latencies), probe_p50_ms=round(latencies[len(latencies) // 2]
                                                               * 1000, 2),
           probe_p99_ms=round(p99 * 1000, 2), probe_max_ms=round(latencies[-1] * 1000, 2),
           rss_growth_10MB_frame_kb=int((rss_after - rss_before) // 1024))


MESSAGE = contract.resolved("Message")
POSITIONED_MESSAGE = contract.resolved("PositionedMessage")
ERROR_FRAME = contract.resolved("ErrorFrame")
