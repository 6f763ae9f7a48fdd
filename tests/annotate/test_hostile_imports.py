"""Hostile files: each import is refused with an error naming the line (or record) and field, writes nothing, and
stays within a bounded memory, measured on the import command run as a child process.

Every file is generated here, in tmp_path, and kept small on disk where it can be (a bomb is small compressed).
"""

import gzip
import json
import os
import random
import re
import string
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse

from annotate.formats import reading
from annotate.formats.core import MAX_GROUP_RESPONSES
from annotate.models import Annotation, ImportBatch, Item, ItemGroup, Role
from annotate.tasks import import_batch_run
from concord import jobs
from tests.annotate.factories import ProjectFactory, member
from tests.annotate.layouts import message, oasst_tree, pandalm_record, run_import
from tests.waits import HANG_GUARD_S

User = get_user_model()
# The most a child process importing one hostile file may hold: the import command alone takes some 80 MB. Without
# the limits, a 40 KB file nested 20,000 deep took 1.1 GB, a 60 KB gzip line of 20 million {} 1.7 GB.
MAX_CHILD_RSS_BYTES = 400 * 1024 * 1024
MIB = 1024 * 1024

PAIR = {"prompt": "p", "response_a": "a", "response_b": "b"}


def pair_line(n: int, **extra: object) -> str:
    return json.dumps({**PAIR, "prompt": f"p{n}", **extra})


def deep(levels: int) -> str:
    """A list nested `levels` deep."""
    return "[" * levels + "]" * levels


def jsonl(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def with_field(raw: str) -> str:
    """A good pair line with one more field, written as raw JSON text."""
    return pair_line(2)[:-1] + ", " + raw + "}"


def assert_nothing_written(project) -> None:  # type: ignore[no-untyped-def]
    assert not Item.objects.filter(project=project).exists()
    assert not ItemGroup.objects.filter(project=project).exists()
    assert not Annotation.objects.filter(item__project=project).exists()
    assert not User.objects.filter(username__startswith="imported:").exists()


# The corpus, through the import service the worker and the command run.

HOSTILE_LINES = [
    pytest.param(
        with_field('"metadata": {"note": "a\\u0000b"}'),
        "field 'metadata' holds the character U+0000, which cannot be stored",
        id="nul",
    ),
    pytest.param(
        with_field('"metadata": {"n": ' + "9" * 5000 + "}"),
        "field 'metadata' holds a number of more than 4300 digits",
        id="integer-of-5000-digits",
    ),
    pytest.param(
        with_field(f'"metadata": {{"x": {deep(100_000)}}}'),
        "field 'metadata' is nested more than 64 levels deep",
        id="nested-100000-deep",
    ),
    pytest.param(
        with_field(f'"metadata": {deep(64)}'),
        "field 'metadata' is nested more than 64 levels deep",
        id="nested-65-deep-with-the-line",
    ),
    pytest.param(
        '{"prompt": "p", "response_a": "a", "response_b": "b", "prompt": "q"}',
        "field 'prompt' appears twice",
        id="duplicate-key",
    ),
    pytest.param(
        with_field('"metadata": {"a": 1, "b": 2, "a": 3}'),
        "field 'metadata' holds an object with the key 'a' twice",
        id="duplicate-nested-key",
    ),
    pytest.param(
        with_field('"metadata": {"x": Infinity}'),
        "field 'metadata' holds Infinity, which JSON does not allow",
        id="infinity",
    ),
    pytest.param(
        with_field('"metadata": {"x": 1e999}'),
        "field 'metadata' holds the number 1e999, too large to store",
        id="float-overflow",
    ),
    pytest.param(
        "[" + "0," * 1_000_000 + "0]",
        "the record holds more than 1,000,000 values",
        id="a-million-values",
    ),
]


@pytest.mark.parametrize(("line", "message"), HOSTILE_LINES)
@pytest.mark.django_db
def test_a_hostile_line_is_named_with_its_field_and_nothing_is_written(tmp_path, line, message):
    project = ProjectFactory()
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(jsonl(pair_line(1), line, pair_line(3)))
    batch = run_import(project, path, "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == f"hostile.jsonl line 2: {message}"
    assert_nothing_written(project)


def pandalm_text(*records: str) -> bytes:
    return ("[" + ", ".join(records) + "]").encode()


GOOD_PANDALM = json.dumps(pandalm_record(1))


def pandalm_with(name: str, raw: str) -> str:
    """A good PandaLM record with the field `name` written as raw JSON text, first."""
    record = pandalm_record(2)
    record.pop(name, None)
    return f'{{"{name}": {raw}, ' + json.dumps(record)[1:]


HOSTILE_RECORDS = [
    pytest.param(
        pandalm_with("instruction", deep(20_000)),
        "field 'instruction' is nested more than 64 levels deep",
        id="nested-20000-deep",
    ),
    pytest.param(
        pandalm_with("extra", deep(64)),
        "field 'extra' is nested more than 64 levels deep",
        id="nested-65-deep-with-the-record",
    ),
    pytest.param(deep(65), "the record is nested more than 64 levels deep", id="record-nested-65-deep"),
    pytest.param('{"idx": 7, ' + json.dumps(pandalm_record(2))[1:], "field 'idx' appears twice", id="duplicate-key"),
    pytest.param(
        pandalm_with("extra", '{"k": 1, "k": 2}'),
        "field 'extra' holds an object with the key 'k' twice",
        id="duplicate-nested-key",
    ),
    pytest.param(
        pandalm_with("input", '"a\\u0000b"'),
        "field 'input' holds the character U+0000, which cannot be stored",
        id="nul",
    ),
    pytest.param(
        pandalm_with("extra", "NaN"),
        "invalid JSON in field 'extra': lexical error: invalid char in json text.",
        id="nan",
    ),
    pytest.param(
        pandalm_with("extra", "9" * 5000),
        "invalid JSON in field 'extra': parse error: integer overflow",
        id="integer-of-5000-digits",
    ),
    pytest.param(
        pandalm_with("extra", "[" + "0," * 1_000_000 + "0]"),
        "the record holds more than 1,000,000 values",
        id="a-million-values",
    ),
]


@pytest.mark.parametrize(("record", "message"), HOSTILE_RECORDS)
@pytest.mark.django_db
def test_a_hostile_array_record_is_named_with_its_field_and_nothing_is_written(tmp_path, record, message):
    project = ProjectFactory()
    path = tmp_path / "hostile.json"
    path.write_bytes(pandalm_text(GOOD_PANDALM, record, GOOD_PANDALM))
    batch = run_import(project, path, "pandalm")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == f"hostile.json record 2: {message}"
    assert_nothing_written(project)


@pytest.mark.parametrize(
    ("after", "message"),
    [
        pytest.param(" [" + GOOD_PANDALM + "]", "ends after this record, then more data follows", id="array"),
        pytest.param(", " + GOOD_PANDALM + "]", "ends after this record, then more data follows", id="stray-comma"),
        pytest.param(" garbage", "ends after this record, then more data follows", id="text"),
    ],
)
@pytest.mark.django_db
def test_anything_after_the_array_is_refused_rather_than_dropped(tmp_path, after, message):
    """Two arrays run together (two files concatenated) lost the second without a word."""
    project = ProjectFactory()
    path = tmp_path / "joined.json"
    path.write_bytes(pandalm_text(GOOD_PANDALM) + after.encode())
    batch = run_import(project, path, "pandalm")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error.startswith(f"joined.json record 1: the array of records {message} ("), batch.error
    assert_nothing_written(project)


@pytest.mark.django_db
def test_a_line_longer_than_the_limit_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    # At 1 MiB rather than 64, to keep the file small.
    monkeypatch.setattr(reading, "MAX_LINE_BYTES", MIB)
    project = ProjectFactory()
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl(pair_line(1), pair_line(2, extra="x" * (2 * MIB)), pair_line(3)))
    batch = run_import(project, path, "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == "long.jsonl line 2: the line is longer than 1 MiB"
    assert_nothing_written(project)


@pytest.mark.django_db
def test_an_array_record_larger_than_the_limit_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    # At 1 MiB rather than 64, to keep the file small: the record's size is counted as the file streams in.
    monkeypatch.setattr(reading, "MAX_RECORD_BYTES", MIB)
    project = ProjectFactory()
    path = tmp_path / "big.json"
    path.write_bytes(pandalm_text(GOOD_PANDALM, pandalm_with("extra", f'"{"x" * (2 * MIB)}"')))
    batch = run_import(project, path, "pandalm")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == "big.json record 2: the record is larger than 1 MiB"
    assert_nothing_written(project)


@pytest.mark.django_db
def test_records_nested_64_levels_deep_are_read(tmp_path):
    project = ProjectFactory()
    lines = tmp_path / "deep.jsonl"
    lines.write_bytes(jsonl(pair_line(1, metadata={"x": json.loads(deep(62))})))
    array = tmp_path / "deep.json"
    array.write_bytes(pandalm_text(pandalm_with("extra", deep(63))))
    assert run_import(project, lines, "pairs").status == ImportBatch.Status.DONE
    assert run_import(project, array, "pandalm").status == ImportBatch.Status.DONE
    assert Item.objects.filter(project=project).count() == 2


@pytest.mark.django_db
def test_a_group_of_too_many_responses_is_refused(tmp_path):
    # Its pairs would grow with the square of its replies.
    tree = oasst_tree()
    replies = MAX_GROUP_RESPONSES + 1
    tree["prompt"]["replies"] = [{**message(f"r{n}", "assistant", f"Reply {n}"), "rank": n} for n in range(replies)]
    project = ProjectFactory(pair_mode="all")
    path = tmp_path / "trees.jsonl"
    path.write_bytes(jsonl(json.dumps(tree)))
    batch = run_import(project, path, "oasst")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == (
        f"trees.jsonl line 1: message {tree['prompt']['message_id']}: {replies} ranked replies; a group holds at "
        f"most {MAX_GROUP_RESPONSES} responses"
    )
    assert_nothing_written(project)


@pytest.mark.django_db
def test_broken_bytes_are_named_with_their_line(tmp_path):
    project = ProjectFactory()
    invalid_utf8 = tmp_path / "latin1.jsonl"
    invalid_utf8.write_bytes(jsonl(pair_line(1)) + b'{"prompt": "caf\xe9"}\n')
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(gzip.compress(jsonl(*(pair_line(n) for n in range(5000))), mtime=0)[:-100])
    assert run_import(project, invalid_utf8, "pairs").error == (
        "latin1.jsonl line 2: the text is not valid UTF-8 (byte 0xe9 at column 16)"
    )
    error = run_import(project, truncated, "pairs").error
    assert error.startswith("truncated.jsonl.gz line ")
    assert "the gzip data is corrupt or truncated (Compressed file ended before the end-of-stream marker" in error
    assert_nothing_written(project)


@pytest.mark.django_db
def test_a_bad_line_after_ten_thousand_good_ones_writes_nothing(tmp_path):
    project = ProjectFactory()
    path = tmp_path / "late.jsonl.gz"
    good = [pair_line(n) for n in range(10_000)]
    path.write_bytes(gzip.compress(jsonl(*good, pair_line(10_000, label="maybe"), *good[:10])))
    batch = run_import(project, path, "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == (
        'late.jsonl.gz line 10001: field \'label\' must be one of "a", "b", "tie", -1, 0 or 1, got "maybe"'
    )
    assert batch.items_created == 0
    assert_nothing_written(project)


def noise_lines(count: int) -> bytes:
    """Lines of random words: JSON as real data compresses, a few times over."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(2000)]
    return jsonl(*(pair_line(n, response_a=" ".join(rng.choices(words, k=40))) for n in range(count)))


@pytest.mark.django_db
def test_gzip_data_may_expand_only_as_far_as_the_setting_allows(tmp_path, settings):
    settings.CONCORD_MAX_EXPANDED_BYTES = MIB
    project = ProjectFactory()
    path = tmp_path / "large.jsonl.gz"
    data = noise_lines(8000)
    assert len(data) > 2 * MIB
    path.write_bytes(gzip.compress(data))
    batch = run_import(project, path, "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error.startswith("large.jsonl.gz line ")
    assert batch.error.endswith(": the gzip data expands to more than 1 MiB, the limit for one file")
    assert_nothing_written(project)


@pytest.mark.django_db
def test_blank_lines_are_skipped_and_counted(tmp_path):
    # Runs of blank lines long enough to be skipped a buffer at a time, and short ones, between records.
    project = ProjectFactory()
    path = tmp_path / "sparse.jsonl"
    blank_runs = b"\n" * 5000 + jsonl(pair_line(1)) + b" \r\n" * 3 + jsonl(pair_line(2)) + b"\n" * 3000
    path.write_bytes(blank_runs + jsonl('{"prompt": 5}'))
    batch = run_import(project, path, "pairs")
    assert batch.error == (
        "sparse.jsonl line 8006: field 'prompt' must be a string or a list of {role, content} messages, got number"
    )


# Through the upload page and the worker's task, as a project admin would.


@pytest.fixture
def admin_client(db, settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"
    project = ProjectFactory()
    client = Client()
    client.force_login(member(project, Role.ADMIN))
    return project, client


@pytest.fixture
def upload_and_run(admin_client, sent_jobs, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Upload a file on the imports page, then run the job it sends, as the worker would; the batch."""
    project, client = admin_client

    def run(name: str, data: bytes, fmt: str) -> ImportBatch:
        upload = SimpleUploadedFile(name, data, content_type="application/octet-stream")
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("annotate:import_list", args=[project.pk]), {"file": upload, "format": fmt})
        assert response.status_code == 302
        batch = ImportBatch.objects.get(project=project)
        assert sent_jobs == [(jobs.IMPORT, batch.pk)]
        import_batch_run(batch.pk)
        batch.refresh_from_db()
        return batch

    return run


def test_an_uploaded_gzip_bomb_stops_at_once(admin_client, upload_and_run):
    project, client = admin_client
    # 16 KB that expand to 16 MiB of blank lines: twice as far as the compression ratio is let go unchecked.
    bomb = gzip.compress(b"\n" * (2 * reading.GZIP_RATIO_GRACE_BYTES) + jsonl(pair_line(1)))
    assert len(bomb) < 64 * 1024
    batch = upload_and_run("bomb.jsonl.gz", bomb, "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error.startswith("bomb.jsonl.gz line ")
    assert batch.error.endswith(
        ": the gzip data expands to more than 100 times its compressed size, which real data does not "
        "(a compression bomb?)"
    )
    page = client.get(reverse("annotate:import_detail", args=[project.pk, batch.pk]))
    assert b"expands to more than 100 times its compressed size" in page.content
    assert_nothing_written(project)


@pytest.mark.parametrize(
    ("name", "data", "fmt", "error"),
    [
        (
            "deep.json",
            pandalm_text(pandalm_with("instruction", deep(20_000))),
            "pandalm",
            "deep.json record 1: field 'instruction' is nested more than 64 levels deep",
        ),
        (
            "deep.jsonl",
            jsonl(with_field(f'"metadata": {deep(100_000)}')),
            "pairs",
            "deep.jsonl line 1: field 'metadata' is nested more than 64 levels deep",
        ),
    ],
    ids=["array", "lines"],
)
def test_an_uploaded_deeply_nested_file_is_refused_with_the_limit(admin_client, upload_and_run, name, data, fmt, error):
    project, client = admin_client
    batch = upload_and_run(name, data, fmt)
    assert (batch.status, batch.error) == (ImportBatch.Status.FAILED, error)
    page = client.get(reverse("annotate:import_detail", args=[project.pk, batch.pk]))
    assert b"is nested more than 64 levels deep" in page.content
    assert_nothing_written(project)


# Through the import command in a child process, whose peak memory is measured.


def child_env() -> dict[str, str]:
    """The child's settings: the test database this test's rows are committed to."""
    db = connection.settings_dict
    user = quote(db["USER"] or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    url = f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'])}"
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "concord.settings.test", "DATABASE_URL": url}


# The child reports its own peak (VmHWM: the most of its memory resident at once). Its rusage would not do: Linux
# counts the memory of the process it was forked from, before exec, in its ru_maxrss.
REPORT_PEAK_AND_RUN = """
import atexit, runpy, sys

def report_peak():
    with open("/proc/self/status") as status:
        sys.stderr.write(next(line for line in status if line.startswith("VmHWM:")))

atexit.register(report_peak)
sys.argv[0] = "manage.py"
runpy.run_path("manage.py", run_name="__main__")
"""


def import_command(project, path: Path, fmt: str) -> tuple[int, str, int]:  # type: ignore[no-untyped-def]
    """Run `manage.py import_items` on a file: its exit status, its output, and its peak resident memory in bytes."""
    arguments = ["import_items", "--project", str(project.pk), "--format", fmt, str(path)]
    child = subprocess.run(
        [sys.executable, "-c", REPORT_PEAK_AND_RUN, *arguments],
        cwd=settings.BASE_DIR,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    output = child.stdout + child.stderr
    peak = re.search(r"^VmHWM:\s+(\d+) kB$", output, re.MULTILINE)
    assert peak is not None, output
    return child.returncode, output, int(peak[1]) * 1024


def pandalm_nested(path: Path) -> Path:
    path.write_bytes(pandalm_text(pandalm_with("instruction", deep(20_000))))
    return path


def gzip_line_of_twenty_million_objects(path: Path) -> Path:
    # Written a piece at a time, so this process stays small too.
    with gzip.open(path, "wb") as file:
        file.write((pair_line(2)[:-1] + ', "metadata": [').encode())
        for _ in range(20):
            file.write(b"{}," * 1_000_000)
        file.write(b"{}]}\n")
    return path


def line_of_fifty_megabytes(path: Path) -> Path:
    with path.open("wb") as file:
        file.write(b'{"prompt": "p", "response_b": "b", "label": "maybe", "response_a": "')
        for _ in range(50):
            file.write(b"x" * 1_000_000)
        file.write(b'"}\n')
    return path


def nested_line(path: Path) -> Path:
    path.write_bytes(jsonl(with_field(f'"metadata": {deep(100_000)}')))
    return path


def long_integer_line(path: Path) -> Path:
    path.write_bytes(jsonl(with_field('"metadata": ' + "1" * 5000)))
    return path


@pytest.mark.parametrize(
    ("make", "name", "fmt", "error"),
    [
        (pandalm_nested, "deep.json", "pandalm", "record 1: field 'instruction' is nested more than 64 levels deep"),
        (
            gzip_line_of_twenty_million_objects,
            "objects.jsonl.gz",
            "pairs",
            "line 1: the gzip data expands to more than 100 times its compressed size",
        ),
        (
            line_of_fifty_megabytes,
            "long.jsonl",
            "pairs",
            'line 1: field \'label\' must be one of "a", "b", "tie", -1, 0 or 1, got "maybe"',
        ),
        (nested_line, "deep.jsonl", "pairs", "line 1: field 'metadata' is nested more than 64 levels deep"),
        (
            long_integer_line,
            "digits.jsonl",
            "pairs",
            "line 1: field 'metadata' holds a number of more than 4300 digits",
        ),
    ],
    ids=["array-nested-20000-deep", "gzip-line-of-20-million-objects", "line-of-50-MB", "lines-nested", "digits"],
)
@pytest.mark.django_db(transaction=True)
def test_the_import_command_refuses_a_hostile_file_in_bounded_memory(tmp_path, make, name, fmt, error):
    project = ProjectFactory()
    path = make(tmp_path / name)
    status, output, peak = import_command(project, path, fmt)
    path.unlink()  # the 50 MB one, above all
    assert status == 1, output
    assert f"CommandError: {path} {error}" in output
    assert "Traceback" not in output
    assert peak < MAX_CHILD_RSS_BYTES, f"peak resident memory {peak / MIB:.0f} MiB"
    batch = ImportBatch.objects.get(project=project)
    assert batch.status == ImportBatch.Status.FAILED
    assert_nothing_written(project)
