#!/usr/bin/env python3
"""What a client frame costs to parse, by its shape, and whether a faster parser would do.

    python bench/parse_cost.py [--repeats 15]

Issue 22 (item 5): a valid 125 KB frame of 29 integers of 4,300 digits costs
milliseconds of `json.loads`, and 20 such connections kept a server busy. The
server now charges each frame by its length before parsing it
(`cost_of`, actors/chat/flood.py). That is fair only if the cost
per character is about the same whatever the frame holds; this prints, for
frames of about 125,000 characters of several shapes, the median time of
`parse_frame` (the stdlib `json`, what the server runs) in ms and in ns per
character, and the ratio to a frame of plain text.

When orjson is installed (it is not a dependency) it is timed too, and the
cases where it answers differently from `json` are listed: a faster parser is
worth adding only if it keeps the exact behaviour (huge integers, lone
surrogates, NaN, duplicate keys, deep nesting; tests/test_fuzz.py).
Bounded: a fixed set of frames and passes, no network.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors.chat.message import BadFrame, Limits, parse_frame  # noqa: E402

SIZE = 124_000


def shapes() -> dict[str, str]:
    """Frames of about SIZE characters, each a different kind of work for a JSON parser."""
    def array(item: str, count: int) -> str:
        return '{"room":"r","text":"t","n":[' + ",".join([item] * count) + "]}"

    return {
        "text": json.dumps({"room": "r", "text": "x" * SIZE}),
        "escaped text": json.dumps({"room": "r", "text": "é" * (SIZE // 6)}),
        "29 ints of 4300 digits": array("7" * 4300, 29),
        "small ints": array("0", SIZE // 2),
        "floats": array("1.5e300", SIZE // 8),
        "empty objects": array("{}", SIZE // 3),
        "short strings": array('"a"', SIZE // 4),
        "nested arrays": '{"room":"r","text":"t","n":' + "[" * 900 + "]" * 900 + "}",
    }


def median_ms(parse, raw: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            parse(raw)
        except (BadFrame, ValueError):
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


EXACTNESS = {  # frames where a parser might differ from the stdlib; the server's answer is json's
    "huge integer (5000 digits)": '{"room":"r","text":"t","n":' + "9" * 5000 + "}",
    "lone surrogate": '{"room":"r","text":"\\ud800"}',
    "NaN": '{"room":"r","text":"t","n":NaN}',
    "duplicate keys": '{"room":"a","room":"b","text":"t"}',
    "deep nesting (5000)": '{"room":"r","text":"t","n":' + "[" * 5000 + "]" * 5000 + "}",
}


def outcome(parse, raw: str) -> str:
    try:
        return repr(parse(raw))[:60]
    except RecursionError:
        return "RecursionError"
    except Exception as error:  # noqa: BLE001 - the kind of refusal is what is compared
        return type(error).__name__


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeats", type=int, default=15)
    args = cli.parse_args()
    limits = Limits()
    try:
        import orjson
    except ImportError:
        orjson = None
    frames = shapes()
    ours = {name: median_ms(lambda raw: parse_frame(raw, limits), raw, args.repeats)
            for name, raw in frames.items()}
    base = ours["text"]
    header = f"{'frame (~125,000 characters)':28} {'parse_frame ms':>15} {'ns/char':>8} {'/ text':>7}"
    print(header + (f" {'orjson ms':>10} {'json/orjson':>12}" if orjson else ""))
    for name, raw in frames.items():
        ms = ours[name]
        line = f"{name:28} {ms:15.3f} {ms * 1e6 / len(raw):8.1f} {ms / base:6.1f}x"
        if orjson:
            fast = median_ms(orjson.loads, raw, args.repeats)
            refused = outcome(orjson.loads, raw) == "JSONDecodeError"
            line += f" {fast:10.3f} {ms / fast:11.1f}x" + (" (orjson refuses it)" if refused else "")
        print(line)
    if orjson:
        print("\nwhere orjson answers differently from json (the server must answer as json does):")
        for name, raw in EXACTNESS.items():
            ours, theirs = outcome(json.loads, raw), outcome(orjson.loads, raw)
            mark = "same" if ours == theirs else "DIFFERENT"
            print(f"  {name:28} json: {ours:30} orjson: {theirs:30} {mark}")


if __name__ == "__main__":
    main()
