"""Importers for public datasets' own layouts: groups of responses, pairs per pair mode, prior annotations."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotate.formats import group_pairs
from annotate.models import Annotation, ImportBatch, Item, ItemGroup, LabelSchema
from annotate.services.projects import project_update
from tests.annotate.factories import ProjectFactory
from tests.annotate.layouts import (
    fg_record,
    message,
    oasst_tree,
    pandalm_record,
    preference_row,
    rating_row,
    run_import,
    write_json,
    write_jsonl,
)

User = get_user_model()


def labels_by(item: Item) -> dict[str, Annotation]:
    return {a.annotator.username: a for a in item.annotations.select_related("annotator")}


def test_pairs_of_a_group_follow_the_pair_mode():
    assert group_pairs(4, "all") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert group_pairs(4, "adjacent") == [(0, 1), (1, 2), (2, 3)]
    assert group_pairs(4, "first") == [(0, 1), (0, 2), (0, 3)]
    assert group_pairs(2, "adjacent") == group_pairs(2, "first") == group_pairs(2, "all") == [(0, 1)]
    with pytest.raises(ValueError, match="unknown pair mode"):
        group_pairs(3, "random")


# Fine-Grained RLHF.


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.django_db
def test_finegrainedrlhf_makes_groups_of_four_with_all_six_pairs_whatever_the_pair_mode(tmp_path, gz):
    project = ProjectFactory(pair_mode="first")
    path = write_json(
        tmp_path / "dev_feedback.json", [fg_record(1), fg_record(2, preference=[2, 2, 2, 0, 0, 1])], gz=gz
    )
    batch = run_import(project, path, "finegrainedrlhf")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    assert (batch.records_read, batch.items_created, batch.duplicates_skipped) == (2, 12, 0)
    group = ItemGroup.objects.get(project=project, external_id="record 1")
    assert [r["key"] for r in group.responses] == ["prediction 1", "prediction 2", "prediction 3", "prediction 4"]
    assert group.prompt == [{"role": "user", "content": "When did café number 1 open?"}]
    assert group.metadata["gold"] == "Café 1 opened in 1921 in Paris, France."
    assert group.context == (
        "Passage 1: Café (place)\n[1] Café (place)\n\nThe café opened in 1921.\n[2] It is in Paris, France.\n\n"
        "Passage 2: Coffee\n[1] Coffee is a drink."
    )
    pairs = {(i.response_a_index, i.response_b_index): i for i in group.items.all()}
    assert sorted(pairs) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    first_vs_third = pairs[(0, 2)]
    assert (first_vs_third.response_a, first_vs_third.response_b) == (
        fg_record(1)["prediction 1"],
        "It opened in 1922, café 1.",
    )
    assert (first_vs_third.context, first_vs_third.prompt) == (group.context, group.prompt)
    assert first_vs_third.external_id == "record 1: prediction 1 vs prediction 3"
    # 1 = the first preferred (-1), 2 = the second (+1), 0 = neither.
    strengths = {pair: labels_by(item)["imported:finegrainedrlhf-preference"].strength for pair, item in pairs.items()}
    assert strengths == {(0, 1): -1, (0, 2): 1, (0, 3): 0, (1, 2): -1, (1, 3): 1, (2, 3): 0}
    assert {pair: item.source_label for pair, item in pairs.items()} == strengths
    assert {pair: item.annotation_count for pair, item in pairs.items()} == {
        (0, 1): 2,
        (0, 2): 1,
        (0, 3): 1,
        (1, 2): 1,
        (1, 3): 1,
        (2, 3): 1,
    }
    second = {(i.response_a_index, i.response_b_index): i for i in Item.objects.filter(group__external_id="record 2")}
    assert labels_by(second[(2, 3)])["imported:finegrainedrlhf-preference"].strength == -1


@pytest.mark.django_db
def test_finegrainedrlhf_feedback_becomes_one_annotation_with_spans_missing_info_and_correction(tmp_path):
    project = ProjectFactory()
    record = fg_record(1)
    run_import(project, write_json(tmp_path / "fg.json", [record]), "finegrainedrlhf")
    item = Item.objects.get(project=project, response_a_index=0, response_b_index=1)
    feedback = labels_by(item)["imported:finegrainedrlhf-feedback"]
    text = record["prediction 1"]
    assert feedback.origin == Annotation.Origin.IMPORTED
    assert (feedback.strength, feedback.justification, feedback.ratings) == (None, "", {})
    assert feedback.schema == LabelSchema.objects.get(project=project)
    assert [(s["start"], s["end"], s["category"], s["text"]) for s in feedback.spans] == [
        (28, 45, "irrelevant", "It serves coffee."),
        (46, 63, "redundant", "It serves coffee."),
        (64, 86, "wrong_grounding", "It is in Paris, Texas."),
    ]
    assert all(text[s["start"] : s["end"]] == s["text"] and s["response"] == "a" for s in feedback.spans)
    assert feedback.spans[1]["explanation"] == "It serves coffee."
    assert feedback.spans[2]["passage_id"] == 1
    assert feedback.spans[2]["sentence_id"] == [2]
    assert feedback.spans[2]["explanation"] == '{"passage_id":1,"sentence_id":[2]}'
    assert "explanation" not in feedback.spans[0]
    assert feedback.missing == [
        {"response": "a", "category": "missing_answer", "passage_id": 1, "sentence_id": [1]},
        {"response": "a", "category": "missing_minor", "passage_id": 2, "sentence_id": [0, 1]},
    ]
    assert feedback.corrections == {"a": record["feedback"]["corrected-prediction"]}
    assert item.metadata["imported_labels"] == {"imported:finegrainedrlhf-preference": {"scale": "binary", "raw": 1}}


@pytest.mark.django_db
def test_imported_annotators_are_inactive_users_without_a_password(tmp_path):
    run_import(ProjectFactory(), write_json(tmp_path / "fg.json", [fg_record(1)]), "finegrainedrlhf")
    users = User.objects.filter(username__startswith="imported:").order_by("username")
    assert [u.username for u in users] == ["imported:finegrainedrlhf-feedback", "imported:finegrainedrlhf-preference"]
    assert not any(u.is_active or u.has_usable_password() for u in users)
    # A second project's import reuses them.
    run_import(ProjectFactory(), write_json(tmp_path / "fg.json", [fg_record(1)]), "finegrainedrlhf")
    assert users.count() == 2
    assert Annotation.objects.filter(annotator__in=users).count() == 14


@pytest.mark.django_db
def test_importing_the_same_file_again_adds_nothing(tmp_path):
    project = ProjectFactory()
    path = write_json(tmp_path / "fg.json", [fg_record(1), fg_record(2)])
    run_import(project, path, "finegrainedrlhf")
    again = run_import(project, path, "finegrainedrlhf", seed=8)
    assert (again.status, again.items_created, again.duplicates_skipped) == (ImportBatch.Status.DONE, 0, 12)
    assert ItemGroup.objects.filter(project=project).count() == 2
    assert Annotation.objects.filter(item__project=project).count() == 14
    assert sum(Item.objects.filter(project=project).values_list("annotation_count", flat=True)) == 14
    submissions = Annotation.objects.values_list("submission_uuid", flat=True)
    assert len(set(submissions)) == 14


@pytest.mark.django_db
def test_groups_of_different_records_never_share_items_even_with_the_same_texts(tmp_path):
    project = ProjectFactory()
    twin = {**fg_record(1), "question": "Another question?"}
    batch = run_import(project, write_json(tmp_path / "fg.json", [fg_record(1), twin]), "finegrainedrlhf")
    assert (batch.items_created, ItemGroup.objects.filter(project=project).count()) == (12, 2)


# PandaLM.


@pytest.mark.django_db
def test_pandalm_keeps_source_order_and_imports_three_annotators(tmp_path):
    project = ProjectFactory()
    records = [
        pandalm_record(0, (1, 1, 2)),
        pandalm_record(1, (2, 0, 1)),
        # The same texts as record 0 under another model pairing: a comparison of its own.
        pandalm_record(
            2,
            (0, 0, 2),
            cmp_key="model-c_model-b",
            **{k: pandalm_record(0)[k] for k in ("input", "response1", "response2")},
        ),
        # Quirks of testset-v1: a blank instruction with the prompt in the input, a boolean response.
        pandalm_record(3, (2, 2, 2), instruction=" ", input="Truthfulness", response1=True, response2=""),
    ]
    batch = run_import(project, write_json(tmp_path / "testset-v1.json", records), "pandalm")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    assert (batch.records_read, batch.items_created) == (4, 4)
    items = list(Item.objects.filter(project=project).order_by("id"))
    first = items[0]
    assert first.prompt == [
        {
            "role": "user",
            "content": "Rewrite the sentence concisely.\n\nThis is sentence number 0, which is rather long.",
        }
    ]
    assert (first.response_a, first.response_b, first.external_id, first.source) == (
        "Sentence 0 is long.",
        "Sentence 0.",
        "0",
        "pandalm",
    )
    assert first.metadata["cmp_key"] == "model-a_model-b"
    strengths = [[labels_by(item)[f"imported:pandalm-annotator{k}"].strength for k in (1, 2, 3)] for item in items]
    assert strengths == [[-1, -1, 1], [1, 0, -1], [0, 0, 1], [1, 1, 1]]
    assert [item.source_label for item in items] == [-1, None, 0, 1]
    assert [item.annotation_count for item in items] == [3, 3, 3, 3]
    quirky = items[3]
    assert quirky.prompt == [{"role": "user", "content": "Truthfulness"}]
    assert (quirky.response_a, quirky.response_b, quirky.metadata["coerced_to_text"]) == ("True", "", ["response1"])


# OpenAssistant.


@pytest.mark.parametrize(
    ("mode", "root_pairs"),
    [("all", [(0, 1), (0, 2), (1, 2)]), ("adjacent", [(0, 1), (1, 2)]), ("first", [(0, 1), (0, 2)])],
)
@pytest.mark.django_db
def test_oasst_ranked_replies_become_groups_best_first_with_pairs_per_pair_mode(tmp_path, mode, root_pairs):
    project = ProjectFactory(pair_mode=mode)
    batch = run_import(project, write_jsonl(tmp_path / "trees.jsonl", [oasst_tree()]), "oasst")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    root = ItemGroup.objects.get(project=project, external_id="root")
    assert [r["key"] for r in root.responses] == ["a2", "a3", "a1"]  # by rank; deleted and unranked left out
    assert [r["meta"]["rank"] for r in root.responses] == [0, 1, 2]
    assert root.prompt == [{"role": "user", "content": "Which coffee should I buy?"}]
    items = list(root.items.all())
    pairs = sorted(tuple(sorted((i.response_a_index, i.response_b_index))) for i in items)
    assert pairs == root_pairs
    # Sides are shuffled (the best reply must not always be A), and every label follows its side:
    # the better-ranked reply (lower index) is preferred.
    for item in items:
        a_is_better = item.response_a_index < item.response_b_index
        assert labels_by(item)["imported:oasst-ranking"].strength == (-1 if a_is_better else 1)
        assert item.source_label == (-1 if a_is_better else 1)
    deeper = ItemGroup.objects.get(project=project, external_id="u1")
    assert deeper.prompt == [
        {"role": "user", "content": "Which coffee should I buy?"},
        {"role": "assistant", "content": "Arabica."},
        {"role": "user", "content": "Why?"},
    ]
    assert [r["text"] for r in deeper.responses] == ["Because it is cheaper.", "Because."]
    # Ranked prompter replies ("Why?", "Thanks") make no group.
    assert ItemGroup.objects.filter(project=project).count() == 2
    assert batch.items_created == len(root_pairs) + 1


@pytest.mark.django_db
def test_a_new_pair_mode_adds_the_missing_pairs_to_the_same_groups(tmp_path):
    project = ProjectFactory(pair_mode="adjacent")
    path = write_jsonl(tmp_path / "trees.jsonl", [oasst_tree()])
    run_import(project, path, "oasst")
    project_update(project=project, pair_mode="all")
    again = run_import(project, path, "oasst")
    assert (again.items_created, again.duplicates_skipped) == (1, 3)
    assert ItemGroup.objects.filter(project=project).count() == 2
    root = ItemGroup.objects.get(project=project, external_id="root")
    assert root.items.count() == 3
    assert Annotation.objects.filter(item__project=project).count() == 4


# HelpSteer2.


@pytest.mark.django_db
def test_helpsteer2_ratings_rows_pair_up_and_preference_rows_join_the_same_items(tmp_path):
    project = ProjectFactory()
    multi_turn = "Hi\n<extra_id_1>Assistant\nHello! How can I help?\n<extra_id_1>User\nName a colour."
    ratings = [
        rating_row("c#", "C# is a language.", 3, verbosity=1),
        rating_row("c#", "C# is a note.", 1),
        rating_row(multi_turn, "Blue.", 4),
        rating_row(multi_turn, "Colours are nice.", 2),
    ]
    batch = run_import(project, write_jsonl(tmp_path / "train.jsonl", ratings), "helpsteer2")
    assert (batch.status, batch.records_read, batch.items_created) == (ImportBatch.Status.DONE, 4, 2)
    csharp, colour = Item.objects.filter(project=project).order_by("id")
    assert (csharp.response_a, csharp.response_b) == ("C# is a language.", "C# is a note.")
    assert colour.prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a colour."},
    ]
    rated = labels_by(csharp)["imported:helpsteer2"]
    assert rated.strength is None
    assert rated.ratings == {
        "a": {"helpfulness": 3, "correctness": 3, "coherence": 4, "complexity": 1, "verbosity": 1},
        "b": {"helpfulness": 1, "correctness": 3, "coherence": 4, "complexity": 1, "verbosity": 2},
    }
    preferences = [
        preference_row("c#", "C# is a language.", "C# is a note.", -2),
        # Given the other way round: the annotation is turned to match the item (B is better = A here).
        preference_row(multi_turn, "Colours are nice.", "Blue.", 3),
        preference_row("New prompt", "One", "Two", 0),
    ]
    second = run_import(project, write_jsonl(tmp_path / "preference.jsonl", preferences), "helpsteer2")
    assert (second.status, second.items_created, second.duplicates_skipped) == (ImportBatch.Status.DONE, 1, 2)
    csharp.refresh_from_db()
    colour.refresh_from_db()
    preferred = labels_by(csharp)["imported:helpsteer2-preference"]
    assert (preferred.strength, csharp.annotation_count) == (-2, 2)
    assert preferred.justification == "@Response 1 is better than @Response 2.\n\nIt answers the question."
    assert labels_by(colour)["imported:helpsteer2-preference"].strength == -3
    assert colour.metadata["imported_labels"]["imported:helpsteer2-preference"] == {"scale": "seven", "raw": 3}
    new = Item.objects.get(project=project, response_a="One")
    assert new.metadata["all_preferences_unprocessed"][1] == {"strength": -100}
    assert new.source_label == 0


# Errors: the record (or line) is named and nothing at all is written.

FG_OK = fg_record(1)


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


def with_errors(*errors: dict) -> dict:
    return {**FG_OK, "feedback": {**FG_OK["feedback"], "errors": list(errors)}}


@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        (
            "finegrainedrlhf",
            json.dumps([FG_OK, FG_OK])[:-40],
            "record 2: invalid JSON in field 'feedback': parse error: premature EOF",
        ),
        (
            "finegrainedrlhf",
            json.dumps([FG_OK, without(FG_OK, "prediction 2")]),
            "record 2: field 'prediction 2' is missing",
        ),
        (
            "finegrainedrlhf",
            json.dumps([FG_OK, {**FG_OK, "question": 7}]),
            "record 2: field 'question' must be a string, got number",
        ),
        ("finegrainedrlhf", json.dumps({"question": "q"}), "expected a JSON array of records, got an object"),
        ("finegrainedrlhf", json.dumps([FG_OK, "text"]), "record 2: expected a JSON object, got string"),
        ("finegrainedrlhf", json.dumps([]), "the file has no records"),
        (
            "finegrainedrlhf",
            json.dumps([FG_OK, {**FG_OK, "preference": [1, 2, 3, 0, 0, 0]}]),
            "record 2: field 'preference' must be a list of 6 labels 0, 1 or 2, got array",
        ),
        (
            "finegrainedrlhf",
            json.dumps([FG_OK, with_errors({"error type": "Irrelevant", "start": 80, "end": 500})]),
            "record 2: field 'feedback' errors[0]: 80-500 is not a span inside 'prediction 1' (0-86 characters)",
        ),
        (
            "finegrainedrlhf",
            json.dumps([with_errors({"error type": "Typo", "start": 0, "end": 2})]),
            "record 1: field 'feedback' errors[0]: unknown error type 'Typo'; expected one of Irrelevant, Redundant, "
            "Incoherent, Wrong-Grounding, Unverifiable",
        ),
        (
            "pandalm",
            json.dumps([pandalm_record(0), pandalm_record(1, (1, 3, 1))]),
            "record 2: field 'annotator2' must be one of 0, 1, 2, got 3",
        ),
        (
            "pandalm",
            json.dumps([pandalm_record(0, response2=["x"])]),
            "record 1: field 'response2' must be a string, got array",
        ),
        (
            "oasst",
            json.dumps(oasst_tree()) + "\n" + json.dumps({"prompt": message("m1", "robot", "Hi")}),
            "line 2: message m1: field 'role' is 'robot'; expected prompter or assistant",
        ),
        ("oasst", json.dumps({"message_tree_id": "t"}), "line 1: field 'prompt' is missing"),
        (
            "helpsteer2",
            "\n".join(
                json.dumps(r) for r in [rating_row("p", "a", 1), rating_row("p", "b", 2), rating_row("q", "c", 3)]
            ),
            "line 3: this ratings row has no second row with the same prompt after it (ratings rows come in pairs)",
        ),
        (
            "helpsteer2",
            "\n".join(json.dumps(r) for r in [rating_row("p", "a", 1), rating_row("q", "b", 2)]),
            "line 2: the prompt differs from line 1's; ratings rows pair up in order (1 with 2, 3 with 4, ...) and "
            "the two rows of a pair must have the same prompt",
        ),
        (
            "helpsteer2",
            json.dumps(rating_row("p", "a", 1, coherence=[3, 4])),
            "line 1: field 'coherence' is a list (HelpSteer2's disagreements file, one rating per annotator); "
            "import the ratings file (train.jsonl, validation.jsonl) instead",
        ),
        (
            "helpsteer2",
            json.dumps(rating_row("p", "a", 5)),
            "line 1: field 'helpfulness' must be an integer from 0 to 4, got 5",
        ),
        (
            "helpsteer2",
            json.dumps(preference_row("p", "a", "b", -4)),
            "line 1: field 'preference_strength' must be an integer from -3 to 3, got -4",
        ),
    ],
)
@pytest.mark.django_db
def test_a_bad_record_is_named_and_nothing_is_written(tmp_path, fmt, content, message):
    project = ProjectFactory()
    path = tmp_path / "bad.json"
    path.write_text(content)
    batch = run_import(project, path, fmt)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED
    separator = " " if message.startswith(("line", "record")) else ": "
    assert batch.error == f"bad.json{separator}{message}"
    assert not Item.objects.filter(project=project).exists()
    assert not ItemGroup.objects.filter(project=project).exists()
    assert not Annotation.objects.exists()
    assert not User.objects.filter(username__startswith="imported:").exists()


@pytest.mark.django_db
def test_a_bad_record_after_written_chunks_rolls_everything_back(tmp_path):
    # 200 records are 1200 items: the first chunk (1000 items) is written before record 201 fails.
    project = ProjectFactory()
    records = [fg_record(n) for n in range(200)] + [without(FG_OK, "feedback")]
    path = write_json(tmp_path / "fg.json.gz", records, gz=True)
    batch = run_import(project, path, "finegrainedrlhf")
    assert batch.error == "fg.json.gz record 201: field 'feedback' is missing"
    assert not Item.objects.filter(project=project).exists()
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_import_items_command_reads_the_new_formats(tmp_path):
    project = ProjectFactory(name="Feedback")
    path = write_json(tmp_path / "dev_feedback.json", [fg_record(1), fg_record(2)])
    out = StringIO()
    call_command("import_items", "--project", "Feedback", "--format", "finegrainedrlhf", str(path), stdout=out)
    assert "Read 2 records: 12 items created, 0 duplicates skipped, 14 imported annotations on them" in out.getvalue()
    assert Item.objects.filter(project=project).count() == 12


@pytest.mark.django_db
def test_ranked_groups_put_the_best_reply_on_either_side(tmp_path):
    project = ProjectFactory(pair_mode="all")
    trees = []
    for n in range(8):
        tree = oasst_tree()
        tree["message_tree_id"] = tree["prompt"]["message_id"] = f"tree-{n}"
        tree["prompt"]["text"] = f"Question {n}?"
        trees.append(tree)
    run_import(project, write_jsonl(tmp_path / "trees.jsonl", trees), "oasst", seed=5)
    labels = set(project.items.values_list("source_label", flat=True))
    assert labels == {-1, 1}
