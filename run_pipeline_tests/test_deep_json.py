"""The iterative JSON codec agrees with the stdlib wherever the stdlib works, and goes deeper."""

from __future__ import annotations

import json

import pytest

from run_pipeline import deep_json
from run_pipeline.warehouse.schema import sanitize_json

SAMPLES = ['{}', '[]', '"s"', '12', '-0.0', '1e400', '123456789012345678901234567890',
           '{"a":[1,2.5,-3e5,"x\\u00e9\\n",true,false,null,NaN,Infinity,-Infinity,{"b":{}}],"c":"\\ud800"}',
           '  [ 1 , { "k" : [ ] } ]  ', '{"":1, "a b":[[[]]], "a b":2}']


@pytest.mark.parametrize("text", SAMPLES)
def test_agrees_with_the_stdlib(text):
    value = json.loads(text)
    assert repr(deep_json.loads(text)) == repr(value)
    assert deep_json.dumps(value) == json.dumps(sanitize_json(value), ensure_ascii=False, separators=(",", ":"),
                                                allow_nan=False, default=str)


@pytest.mark.parametrize("text", ['', '{', '[1,]', '{"a"}', '{"a":1,}', '[1 2]', 'tru', '{"a":1} x', '{1:2}', '"\x01"'])
def test_refuses_what_the_stdlib_refuses(text):
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        deep_json.loads(text)


def test_any_depth_round_trips():
    for text in ("[" * 20_000 + "1" + "]" * 20_000, '{"a":' * 20_000 + '"x"' + "}" * 20_000):
        with pytest.raises(RecursionError):
            json.loads(text)
        assert deep_json.dumps(deep_json.loads(text)) == text
