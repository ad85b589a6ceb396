import json

from activesynth.agent.filtering import _round_prompts
from activesynth.agent.runs import Round


def test_round_prompts_feed_the_copy_checks(tmp_path):
    rows = [
        {"prompt_id": "p1", "text": "Examples:\n1. Where is my card?\n2.", "examples": ["Where is my card?"]},
        {"prompt_id": "p2", "text": "Rewrite: I lost my card", "examples": ["I lost my card", 5]},
    ]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    prompts, examples = _round_prompts(Round(tmp_path, 1))
    assert prompts == {"p1": rows[0]["text"], "p2": rows[1]["text"]}
    assert examples == ["Where is my card?", "I lost my card"]
    assert _round_prompts(Round(tmp_path / "missing", 1)) == ({}, [])
