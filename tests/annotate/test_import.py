import gzip
import json
import re
from io import BytesIO, StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.formats import ImportFormatError, LineReader, PreferenceRecord, content_hash, parse_records
from annotate.models import ImportBatch, Item
from annotate.selectors import import_progress
from annotate.services.imports import INSERT_BATCH_SIZE, import_batch_create, item_import
from tests.annotate.factories import ItemFactory, ProjectFactory
from tests.waits import HANG_GUARD_S


def write_lines(path: Path, lines: list[str], *, gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_rows(path: Path, rows: list[dict], *, gz: bool = False) -> Path:
    return write_lines(path, [json.dumps(row) for row in rows], gz=gz)


def run_import(project, path: Path, fmt: str, *, seed: int | None = 7) -> ImportBatch:
    batch = import_batch_create(project=project, created_by=None, file_name=path.name, format=fmt, seed=seed)
    return item_import(batch=batch, path=path)


def chosen_of(item: Item) -> str:
    return item.response_a if item.source_label == Item.SourceLabel.A else item.response_b


def rejected_of(item: Item) -> str:
    return item.response_b if item.source_label == Item.SourceLabel.A else item.response_a


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if n % 2 == 0 else 'Assistant'}: {text}" for n, text in enumerate(turns))


# Formats, through the importer.


@pytest.mark.django_db
def test_it_imports_trl_with_string_and_message_fields(tmp_path):
    project = ProjectFactory()
    path = write_rows(
        tmp_path / "trl.jsonl",
        [
            {"prompt": "What colour is the sky?", "chosen": "Blue.", "rejected": "Green."},
            {
                "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5"}],
                "id": "row-2",
            },
        ],
    )
    batch = run_import(project, path, "trl")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    assert (batch.records_read, batch.items_created, batch.duplicates_skipped) == (2, 2, 0)
    first, second = Item.objects.filter(project=project).order_by("id")
    assert first.prompt == [{"role": "user", "content": "What colour is the sky?"}]
    assert (chosen_of(first), rejected_of(first)) == ("Blue.", "Green.")
    assert first.external_id == "line 1"
    assert first.source == "trl.jsonl"
    assert first.import_batch == batch
    assert first.metadata == {"import": {"file": "trl.jsonl", "line": 1}}
    assert second.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert (chosen_of(second), rejected_of(second), second.external_id) == ("4", "5", "row-2")


@pytest.mark.django_db
def test_it_imports_trl_implicit_prompt_conversations(tmp_path):
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Joke?"},
    ]
    row = {
        "chosen": [*shared, {"role": "assistant", "content": "Why did the chicken..."}],
        "rejected": [*shared, {"role": "assistant", "content": "No."}],
    }
    batch = run_import(ProjectFactory(), write_rows(tmp_path / "implicit.jsonl", [row]), "trl")
    item = Item.objects.get(import_batch=batch)
    assert item.prompt == shared
    assert (chosen_of(item), rejected_of(item)) == ("Why did the chicken...", "No.")


@pytest.mark.django_db
def test_it_imports_hh_rlhf_transcripts_from_gzip(tmp_path):
    rows = [
        {
            "chosen": hh("Hi", "Hello.", "How do I bake bread?", "Knead, rise, bake."),
            "rejected": hh("Hi", "Hello.", "How do I bake bread?", "Buy it."),
        },
        # Real-data quirks: an empty preferred reply, and a reply that says "Assistant:" again.
        {"chosen": hh("Do something bad", ""), "rejected": hh("Do something bad", "Sure.")},
        {"chosen": hh("Q", "Part one.") + "\n\nAssistant:  Part two.", "rejected": hh("Q", "Other.")},
    ]
    batch = run_import(ProjectFactory(), write_rows(tmp_path / "hh.jsonl.gz", rows, gz=True), "hh-rlhf")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    first, empty, repeated = Item.objects.filter(import_batch=batch).order_by("id")
    assert first.prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "How do I bake bread?"},
    ]
    assert (chosen_of(first), rejected_of(first), first.source) == ("Knead, rise, bake.", "Buy it.", "hh-rlhf")
    assert (chosen_of(empty), rejected_of(empty)) == ("", "Sure.")
    assert repeated.prompt == [{"role": "user", "content": "Q"}]
    assert chosen_of(repeated) == "Part one.\n\nAssistant:  Part two."


@pytest.mark.django_db
def test_it_imports_pairs_keeping_order_labels_and_metadata(tmp_path):
    base = {"prompt": "Pick one", "response_b": "B text"}
    rows = [
        {**base, "response_a": "one", "label": "a", "id": 17, "metadata": {"model": "x"}, "source": "arena"},
        {**base, "response_a": "two", "label": "B"},
        {**base, "response_a": "three", "label": "tie"},
        {**base, "response_a": "four", "label": -1},
        {**base, "response_a": "five", "label": 1, "external_id": "ext-5"},
        {**base, "response_a": "six"},
    ]
    batch = run_import(ProjectFactory(), write_rows(tmp_path / "pairs.jsonl", rows), "pairs")
    items = list(Item.objects.filter(import_batch=batch).order_by("id"))
    assert [i.response_a for i in items] == ["one", "two", "three", "four", "five", "six"]
    assert {i.response_b for i in items} == {"B text"}
    assert [i.source_label for i in items] == [-1, 1, 0, -1, 1, None]
    assert (items[0].external_id, items[0].source, items[0].metadata["model"]) == ("17", "arena", "x")
    assert (items[4].external_id, items[5].source) == ("ext-5", "pairs.jsonl")


@pytest.mark.django_db
def test_it_detects_gzip_by_content_not_by_name(tmp_path):
    row = {"prompt": "p", "chosen": "c", "rejected": "r"}
    compressed_as_plain = write_rows(tmp_path / "looks-plain.jsonl", [row], gz=True)
    plain_as_compressed = write_rows(tmp_path / "looks-compressed.jsonl.gz", [row])
    assert run_import(ProjectFactory(), compressed_as_plain, "trl").items_created == 1
    assert run_import(ProjectFactory(), plain_as_compressed, "trl").items_created == 1


# Errors: the line is named, nothing is written, the batch is FAILED with the message.

VALID = json.dumps({"prompt": "p", "response_a": "a", "response_b": "b"})
VALID_TRL = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})


@pytest.mark.parametrize(
    ("lines", "fmt", "message"),
    [
        (
            [VALID, '{"prompt": "p", "response_a": "a" "response_b": "b"}'],
            "pairs",
            "line 2: invalid JSON: Expecting ',' delimiter (column 35)",
        ),
        ([VALID_TRL, "", json.dumps({"prompt": "p", "rejected": "r"})], "trl", "line 3: field 'chosen' is missing"),
        (
            [json.dumps({"prompt": 5, "response_a": "a", "response_b": "b"})],
            "pairs",
            "line 1: field 'prompt' must be a string or a list of {role, content} messages, got number",
        ),
        (
            [VALID, json.dumps({"prompt": "p", "response_a": "  ", "response_b": "b"})],
            "pairs",
            "line 2: field 'response_a' is empty",
        ),
        (
            [json.dumps({"prompt": "p", "response_a": "a", "response_b": "b", "label": "x"})],
            "pairs",
            'line 1: field \'label\' must be one of "a", "b", "tie", -1, 0 or 1, got "x"',
        ),
        (["[1, 2]"], "pairs", "line 1: expected a JSON object, got array"),
        (
            [json.dumps({"chosen": hh("A", "x"), "rejected": hh("B", "y")})],
            "hh-rlhf",
            "line 1: fields 'chosen' and 'rejected' must share all turns but the final assistant turn "
            "(they differ at turn 1)",
        ),
        (
            [json.dumps({"chosen": hh("A", "x", "more?"), "rejected": hh("A", "y")})],
            "hh-rlhf",
            "line 1: field 'chosen' must end with an assistant turn",
        ),
        (
            [
                json.dumps(
                    {
                        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                        "rejected": "b",
                    }
                )
            ],
            "trl",
            "line 1: field 'prompt' is missing "
            "(it may only be left out when 'chosen' and 'rejected' are conversations)",
        ),
        (
            [json.dumps({"prompt": [{"role": "robot", "content": "x"}], "chosen": "c", "rejected": "r"})],
            "trl",
            "line 1: field 'prompt' message 1 has role 'robot'; expected user, assistant or system",
        ),
        ([], "trl", "the file has no records"),
        (["", "   "], "pairs", "the file has no records"),
    ],
)
@pytest.mark.django_db
def test_it_names_the_bad_line_and_writes_nothing(tmp_path, lines, fmt, message):
    project = ProjectFactory()
    path = write_lines(tmp_path / "bad.jsonl", lines)
    batch = run_import(project, path, fmt)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED
    separator = " " if message.startswith("line") else ": "
    assert batch.error == f"bad.jsonl{separator}{message}"
    assert batch.finished_at is not None
    assert not Item.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_a_bad_line_after_inserted_batches_rolls_everything_back(tmp_path):
    project = ProjectFactory()
    good = [
        json.dumps({"prompt": f"p{n}", "response_a": "a", "response_b": "b"}) for n in range(INSERT_BATCH_SIZE + 500)
    ]
    path = write_lines(tmp_path / "middle.jsonl.gz", [*good, "{oops", *good[:10]], gz=True)
    batch = run_import(project, path, "pairs")
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error.startswith(f"middle.jsonl.gz line {len(good) + 1}: invalid JSON: ")
    assert (batch.items_created, Item.objects.filter(project=project).count()) == (0, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            gzip.compress((VALID + "\n").encode() * 50, mtime=0)[:-12],
            r"line \d+: the gzip data is corrupt or truncated \(",
        ),
        (b"\x1f\x8bnot really gzip", r"line 1: the gzip data is corrupt or truncated \("),
        (
            VALID.encode() + b"\n" + b'{"prompt": "caf\xe9"}\n',
            r"line 2: the text is not valid UTF-8 \(byte 0xe9 at column 16\)",
        ),
    ],
)
@pytest.mark.django_db
def test_it_reports_broken_files(tmp_path, data, message):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(data)
    batch = run_import(ProjectFactory(), path, "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert re.match(rf"broken\.jsonl {message}", batch.error), batch.error


# Duplicates and the A/B shuffle.


@pytest.mark.django_db
def test_it_skips_duplicates_within_a_file_and_across_imports(tmp_path):
    project = ProjectFactory()
    rows = [
        {"prompt": "p", "response_a": "x", "response_b": "y"},
        {"prompt": "p", "response_a": "y", "response_b": "x"},  # the same pair, sides swapped
        {"prompt": "q", "response_a": "x", "response_b": "y"},
    ]
    first = run_import(project, write_rows(tmp_path / "one.jsonl", rows), "pairs")
    assert (first.records_read, first.items_created, first.duplicates_skipped) == (3, 2, 1)
    more = [*rows, {"prompt": [{"role": "user", "content": "p"}], "response_a": "x", "response_b": "z"}]
    second = run_import(project, write_rows(tmp_path / "two.jsonl", more), "pairs")
    assert (second.records_read, second.items_created, second.duplicates_skipped) == (4, 1, 3)
    assert Item.objects.filter(project=project).count() == 3


@pytest.mark.django_db
def test_the_same_pair_may_exist_in_another_project(tmp_path):
    path = write_rows(tmp_path / "one.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    ItemFactory(project=ProjectFactory())  # unrelated content elsewhere
    assert run_import(ProjectFactory(), path, "trl").items_created == 1
    assert run_import(ProjectFactory(), path, "trl").items_created == 1


@pytest.mark.django_db
def test_the_ab_shuffle_is_fixed_by_the_seed_and_recorded(tmp_path):
    rows = [{"prompt": f"p{n}", "chosen": f"good {n}", "rejected": f"bad {n}"} for n in range(40)]
    path = write_rows(tmp_path / "trl.jsonl", rows)

    def labels(seed: int) -> list[int]:
        batch = run_import(ProjectFactory(), path, "trl", seed=seed)
        items = list(Item.objects.filter(import_batch=batch).order_by("id"))
        assert all(chosen_of(i).startswith("good") and rejected_of(i).startswith("bad") for i in items)
        return [i.source_label for i in items]

    assert labels(1) == labels(1)
    assert labels(1) != labels(2)
    assert set(labels(1)) == {Item.SourceLabel.A, Item.SourceLabel.B}


@pytest.mark.django_db
def test_a_random_seed_is_chosen_and_kept_when_none_is_given(tmp_path):
    path = write_rows(tmp_path / "trl.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    batch = run_import(ProjectFactory(), path, "trl", seed=None)
    batch.refresh_from_db()
    assert 0 <= batch.seed < 2**32


@pytest.mark.django_db
def test_running_a_batch_twice_does_nothing_the_second_time(tmp_path):
    project = ProjectFactory()
    path = write_rows(tmp_path / "trl.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    batch = import_batch_create(project=project, created_by=None, file_name=path.name, format="trl")
    stale = ImportBatch.objects.get(pk=batch.pk)
    item_import(batch=batch, path=path)
    again = item_import(batch=stale, path=path)
    assert again.status == ImportBatch.Status.DONE
    assert again.items_created == 1
    assert Item.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_it_reports_progress_while_running(tmp_path):
    rows = [{"prompt": f"p{n}", "chosen": "c", "rejected": "r"} for n in range(INSERT_BATCH_SIZE * 2 + 5)]
    path = write_rows(tmp_path / "trl.jsonl", rows)
    batch = import_batch_create(project=ProjectFactory(), created_by=None, file_name=path.name, format="trl")
    seen = []
    item_import(batch=batch, path=path, progress=seen.append)
    assert [p.records_read for p in seen] == [0, INSERT_BATCH_SIZE, INSERT_BATCH_SIZE * 2, len(rows)]
    assert seen[-1].percent == 100
    assert import_progress(batch).percent == 100


# The parser on its own.


def test_it_reads_hh_rlhf_quirks_found_in_the_real_data():
    # Seen in Anthropic's files: a reply that says "Assistant:" again, stray spaces after the markers,
    # and an empty preferred reply.
    rows = [
        {"chosen": hh("q1", "first part") + "\n\nAssistant: more", "rejected": hh("q1", "other")},
        {"chosen": "\n\nHuman:  q2 \n\nAssistant:  fine ", "rejected": hh("q2", "bad")},
        {"chosen": hh("q3", ""), "rejected": hh("q3", "rude")},
    ]
    raw = BytesIO(gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode()))
    records = list(parse_records(LineReader(raw), format="hh-rlhf"))
    assert [r.prompt for r in records] == [[{"role": "user", "content": q}] for q in ("q1", "q2", "q3")]
    assert [r.chosen for r in records] == ["first part\n\nAssistant: more", "fine", ""]
    assert all(isinstance(r, PreferenceRecord) for r in records)


def test_content_hash_ignores_the_order_of_responses():
    prompt = [{"role": "user", "content": "p"}]
    assert content_hash(prompt, "a", "b") == content_hash(prompt, "b", "a")
    assert content_hash(prompt, "a", "b") != content_hash([{"role": "system", "content": "p"}], "a", "b")


def test_errors_can_name_the_file():
    assert (
        ImportFormatError("field 'x' is missing", line=3).for_file("f.jsonl") == "f.jsonl line 3: field 'x' is missing"
    )
    assert ImportFormatError("the file has no records").for_file("f.jsonl") == "f.jsonl: the file has no records"


# The command line.


@pytest.mark.django_db
def test_import_items_command_prints_a_summary(tmp_path):
    project = ProjectFactory(name="Command project")
    rows = [{"chosen": hh("q", "good"), "rejected": hh("q", "bad")}] * 2
    path = write_rows(tmp_path / "hh.jsonl", rows)
    out = StringIO()
    call_command(
        "import_items", "--project", "Command project", "--format", "hh-rlhf", "--seed", "3", str(path), stdout=out
    )
    assert "Read 2 records: 1 items created, 1 duplicates skipped (seed 3" in out.getvalue()
    call_command("import_items", "--project", str(project.pk), "--format", "hh-rlhf", str(path), stdout=StringIO())
    assert Item.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_import_items_command_fails_on_a_bad_line_with_nothing_written(tmp_path):
    project = ProjectFactory()
    path = write_lines(tmp_path / "bad.jsonl", [VALID, '{"prompt": "p"}'])
    with pytest.raises(CommandError, match=r"bad\.jsonl line 2: field 'response_a' is missing$") as raised:
        call_command("import_items", "--project", str(project.pk), "--format", "pairs", str(path))
    assert str(raised.value).startswith(str(path))
    assert not Item.objects.exists()


@pytest.mark.django_db
def test_import_items_command_names_an_unknown_project_or_file(tmp_path):
    ProjectFactory(name="Known")
    path = write_lines(tmp_path / "ok.jsonl", [VALID])
    with pytest.raises(CommandError, match="No project with the name or id 'Unknown'"):
        call_command("import_items", "--project", "Unknown", "--format", "pairs", str(path))
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_items", "--project", "Known", "--format", "pairs", str(tmp_path / "missing.jsonl"))
    assert not ImportBatch.objects.exists()


@pytest.mark.django_db
def test_a_batch_left_running_by_a_dead_worker_is_imported_on_redelivery(tmp_path):
    project = ProjectFactory()
    path = write_rows(tmp_path / "trl.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    batch = import_batch_create(project=project, created_by=None, file_name=path.name, format="trl")
    # The first worker claimed it and was killed: its transaction rolled back, the row still says RUNNING.
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RUNNING)
    done = item_import(batch=ImportBatch.objects.get(pk=batch.pk), path=path)
    assert (done.status, done.items_created) == (ImportBatch.Status.DONE, 1)


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_leaves_a_batch_alone_while_its_worker_holds_it(tmp_path):
    import threading

    from django.db import connection, transaction

    project = ProjectFactory()
    path = write_rows(tmp_path / "trl.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    batch = import_batch_create(project=project, created_by=None, file_name=path.name, format="trl")
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RUNNING)
    locked, release = threading.Event(), threading.Event()

    def first_worker() -> None:
        with transaction.atomic():
            list(ImportBatch.objects.select_for_update().filter(pk=batch.pk))
            locked.set()
            release.wait(timeout=HANG_GUARD_S)
        connection.close()

    holder = threading.Thread(target=first_worker)
    holder.start()
    assert locked.wait(timeout=HANG_GUARD_S)
    try:
        second = item_import(batch=ImportBatch.objects.get(pk=batch.pk), path=path)
        assert second.status == ImportBatch.Status.RUNNING
        assert not Item.objects.filter(project=project).exists()
    finally:
        release.set()
        holder.join()
