"""How v1-history.sqlite and v1-history.json were made: with the history module of the release
before vantage points (schema version 1, no `schema_version` table), given as a file:

    git show 976bb98:probe/history.py > /tmp/history_v1.py
    python3 tests/history/data/make_v1.py /tmp/history_v1.py tests/history/data

Three targets over five runs, one of them changing twice and one not measured once; the JSON
holds what that release's `targets()` and `timeline()` said about the file."""

import dataclasses
import importlib.util
import json
import os
import sys

spec = importlib.util.spec_from_file_location("history_v1", sys.argv[1])
old = importlib.util.module_from_spec(spec)
sys.modules["history_v1"] = old
spec.loader.exec_module(old)
out = sys.argv[2]
path = os.path.join(out, "v1-history.sqlite")
if os.path.exists(path):
    os.remove(path)
clock = iter(range(1_700_000_000, 1_700_001_000, 7)).__next__
RUNS = [
    {"a": "clean", "b": "clean", "c": "server-reset"},
    {"a": "clean", "b": "middlebox-reset", "c": "server-reset"},
    {"a": "clean", "b": "middlebox-reset", "c": None},
    {"a": "clean", "b": "clean", "c": "server-reset"},
    {"a": "clean", "b": "clean", "c": "server-reset"},
]
for states in RUNS:
    history = old.History(path, clock=clock)
    for name, verdict in states.items():
        document = {"target": {"url": f"http://{name}.example/", "address": "198.51.100.80", "port": 80},
                    "verdict": verdict, "direction": "to-client" if verdict == "middlebox-reset" else None,
                    "hop": 2 if verdict == "middlebox-reset" else None, "rtt_ms": 50.5 if verdict else None,
                    "explanation": f"{name} was {verdict}"}
        code = {"clean": 0, "middlebox-reset": 3, "server-reset": 4, None: 1}[verdict]
        history.record(f"http://{name}.example/", document, code)
    history.close(max(3 if v == "middlebox-reset" else 0 for v in states.values()))
said = {"targets": old.targets(path),
        "timelines": {name: [dataclasses.asdict(e) for e in old.timeline(path, f"http://{name}.example/")[1]]
                      for name in "abc"}}
with open(os.path.join(out, "v1-history.json"), "w") as handle:
    json.dump(said, handle, indent=1)
