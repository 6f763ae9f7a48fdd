"""Small files in the layouts of real public datasets, generated here (tests never read ../shared/data)."""

import gzip
import json
from pathlib import Path
from typing import Any

from annotate.models import ImportBatch
from annotate.services.imports import import_batch_create, item_import


def run_import(project, path: Path, fmt: str, *, seed: int = 7) -> ImportBatch:  # type: ignore[no-untyped-def]
    batch = import_batch_create(project=project, created_by=None, file_name=path.name, format=fmt, seed=seed)
    return item_import(batch=batch, path=path)


def write_json(path: Path, value: Any, *, gz: bool = False) -> Path:
    data = json.dumps(value, indent=1).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# Fine-Grained RLHF qa-feedback: a JSON array of records.


def span(text: str, part: str, error_type: str, explanation: str = "", *, occurrence: int = 1) -> dict[str, Any]:
    start = -1
    for _ in range(occurrence):
        start = text.index(part, start + 1)
    return {"error type": error_type, "explanation": explanation, "start": start, "end": start + len(part)}


def fg_record(n: int, *, preference: list[int] | None = None) -> dict[str, Any]:
    # Non-ASCII text before the spans: character offsets and byte offsets differ there.
    first = f"Le café № {n} opened in 1921. It serves coffee. It serves coffee. It is in Paris, Texas."
    return {
        "question": f"When did café number {n} open?",
        "passages": [
            ["Café (place)", "Café (place)\n\nThe café opened in 1921.", "It is in Paris, France."],
            ["Coffee", "Coffee is a drink."],
        ],
        "gold": f"Café {n} opened in 1921 in Paris, France.",
        "prediction 1": first,
        "prediction 2": f"Café {n} opened in 1921.",
        "prediction 3": f"It opened in 1922, café {n}.",
        "prediction 4": f"Nobody knows when café {n} opened.",
        "feedback": {
            "errors": [
                span(first, "It is in Paris, Texas.", "Wrong-Grounding", '{"passage_id":1,"sentence_id":[2]}'),
                span(first, "It serves coffee.", "Irrelevant"),
                span(first, "It serves coffee.", "Redundant", "It serves coffee.", occurrence=2),
            ],
            "missing-info": [
                {"error type": "Missing-Answer", "passage_id": 1, "sentence_id": [1]},
                {"error type": "Missing-Minor-Auxiliary", "passage_id": 2, "sentence_id": [0, 1]},
            ],
            "corrected-prediction": f"Le café № {n} opened in 1921. It is in Paris, France.",
        },
        "preference": preference if preference is not None else [1, 2, 0, 1, 2, 0],
    }


# PandaLM test set: a JSON array of records.


def pandalm_record(idx: int, labels: tuple[int, int, int] = (1, 1, 2), **fields: Any) -> dict[str, Any]:
    return {
        "idx": idx,
        "motivation_app": "Grammarly",
        "cmp_key": "model-a_model-b",
        "instruction": "Rewrite the sentence concisely.",
        "input": f"This is sentence number {idx}, which is rather long.",
        "response1": f"Sentence {idx} is long.",
        "response2": f"Sentence {idx}.",
        "annotator1": labels[0],
        "annotator2": labels[1],
        "annotator3": labels[2],
        **fields,
    }


# OpenAssistant message trees: one tree per line.


def message(message_id: str, role: str, text: str, *replies: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "text": text,
        "role": role,
        "lang": "en",
        "review_count": 3,
        "review_result": True,
        "deleted": False,
        "synthetic": False,
        "emojis": {"+1": 2},
        "replies": list(replies),
        **fields,
    }


def oasst_tree() -> dict[str, Any]:
    """Two ranking groups: the root's three live ranked replies (one more is deleted), and a follow-up's two.
    A group of ranked prompter replies makes no group."""
    follow_ups = [
        message(
            "u1",
            "prompter",
            "Why?",
            message("a21", "assistant", "Because.", rank=1),
            message("a22", "assistant", "Because it is cheaper.", rank=0),
            rank=0,
        ),
        message("u2", "prompter", "Thanks", rank=1),
    ]
    return {
        "message_tree_id": "root",
        "tree_state": "ready_for_export",
        "prompt": message(
            "root",
            "prompter",
            "Which coffee should I buy?",
            message("a1", "assistant", "Arabica.", *follow_ups, rank=2),
            message("a2", "assistant", "A fresh, local roast.", rank=0),
            message("a3", "assistant", "Any.", rank=1),
            message("a4", "assistant", "Deleted answer.", rank=3, deleted=True),
            message("a5", "assistant", "Unranked answer."),
        ),
    }


# HelpSteer2: ratings rows (pairs of consecutive rows) and HelpSteer2-Preference rows.


def rating_row(prompt: str, response: str, helpfulness: int, **ratings: int) -> dict[str, Any]:
    base = {"correctness": 3, "coherence": 4, "complexity": 1, "verbosity": 2}
    return {"prompt": prompt, "response": response, "helpfulness": helpfulness, **base, **ratings}


def preference_row(prompt: str, response_1: str, response_2: str, strength: int) -> dict[str, Any]:
    return {
        "split": "train",
        "prompt": prompt,
        "response_1": response_1,
        "response_2": response_2,
        "preference_strength": strength,
        "preference_statement": "@Response 1 is better than @Response 2.",
        "preference_elaboration": "It answers the question.",
        "three_most_similar_preferences": [{"statement": "s", "elaboration": "e", "strength": strength}],
        "all_preferences_unprocessed": [{"strength": strength, "justification": "j"}, {"strength": -100}],
    }
