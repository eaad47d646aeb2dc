from __future__ import annotations

import json

import pytest

from traces.parsing import MAX_LINE_CHARS, TraceFormatError, extract_answer, parse_traces, render_completion


def _line(**fields) -> str:
    item = {"prompt": "What is 1+2?", "steps": ["1+2=3"], "final_answer": "3"}
    item.update(fields)
    return json.dumps({k: v for k, v in item.items() if v is not None})


def test_split_is_deterministic_and_holds_out_the_requested_fraction():
    content = "\n".join(_line(prompt=f"What is {i}+1?", final_answer=str(i + 1)) for i in range(50))
    first, second = parse_traces(content, eval_fraction=0.2), parse_traces(content, eval_fraction=0.2)
    assert (len(first.train), len(first.eval)) == (40, 10)
    assert first.eval == second.eval and first.content_hash == second.content_hash
    assert not {i["prompt"] for i in first.train} & {i["prompt"] for i in first.eval}


def test_meta_split_tags_choose_the_held_out_items():
    content = "\n".join([_line(meta={"split": "train"}), _line(meta={"split": "eval"}), _line()])
    parsed = parse_traces(content)
    assert (len(parsed.train), len(parsed.eval)) == (2, 1)


def test_every_bad_line_is_reported_with_its_number():
    content = "\n".join([_line(), "{not json", _line(steps=None), _line(steps="1+2=3"), _line()])
    with pytest.raises(TraceFormatError) as info:
        parse_traces(content)
    assert info.value.errors[0].startswith("line 2: malformed JSON")
    assert info.value.errors[1] == "line 3: missing field(s): steps"
    assert info.value.errors[2] == "line 4: steps must be a list of strings"


def test_overlong_lines_are_refused():
    with pytest.raises(TraceFormatError, match=f"line 2: .* at most {MAX_LINE_CHARS}"):
        parse_traces(_line() + "\n" + _line(prompt="x" * MAX_LINE_CHARS))


def test_completion_renders_steps_then_answer_and_extraction_reads_it_back():
    item = {"prompt": "What is 47+38?", "steps": ["7+8=15", "4+3+1=8"], "final_answer": "85"}
    text = render_completion(item)
    assert text == "7+8=15; 4+3+1=8 #### 85"
    assert extract_answer(text) == "85"
    assert extract_answer("7+8=15; no answer") == ""
