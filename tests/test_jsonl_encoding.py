"""The JSON-lines sink's fast line encoder writes exactly what json.dumps would, for every kind of value."""
from __future__ import annotations

import json
import random

from edged.sinks import jsonl
from edged.tag import Sample

VALUES = [None, True, False, 0, -5, 2**64 - 1, -(2**63), 1.5, -0.0, 1e300, 5e-324, float("nan"), float("inf"),
          float("-inf"), 'a"b\\c\n', "ü€", "", 3.0, 12345678901234567890]


def reference(s: Sample) -> str:
    return json.dumps({"ts": jsonl.rfc3339(s.ts_ns), "ts_ns": s.ts_ns, "device": s.device, "tag": s.tag,
                       "value": jsonl._json_value(s.value),
                       "quality": jsonl.QUALITY_LABELS.get(s.quality, str(s.quality))},
                      ensure_ascii=False, default=str)


def test_fast_lines_equal_json_dumps() -> None:
    rng = random.Random(7)
    base = 1_795_595_423_450_594_276
    for i in range(20_000):
        ts = rng.randrange(0, 2**62) if i % 2 else base + rng.randrange(0, 5_000_000_000)
        s = Sample(ts, rng.choice(["press1", 'dé"v']), rng.choice(["t", "a.b", "ü"]), rng.choice(VALUES),
                   rng.choice([0, 1, 2, 7]))
        line = jsonl.sample_line(s)
        assert line == reference(s)
        back = json.loads(line)
        assert back["ts_ns"] == ts and back["device"] == s.device and back["tag"] == s.tag
