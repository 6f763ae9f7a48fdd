"""Per-project item numbers (Item.number): 1, 2, 3... in each project in the order items arrive, by every way
items are made (the importer's INSERT, the database's trigger for the rest), never spent on a duplicate or a failed
import, and what the pages show and find items by."""

import importlib

import pytest
from django.db import connection
from django.urls import reverse

from annotate.models import ImportBatch, Item, Role
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.annotate.test_import import run_import, write_lines, write_rows

pytestmark = pytest.mark.django_db


def trl(n: int, tag: str = "") -> dict:
    return {"prompt": f"Question {tag}{n}?", "chosen": f"Good answer {n}.", "rejected": f"Bad answer {n}."}


def numbers(project) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """(number, prompt text) of the project's items in number order."""
    items = Item.objects.filter(project=project).order_by("number")
    return [(item.number, item.prompt[0]["content"]) for item in items]


def test_each_project_numbers_its_items_from_one_whichever_way_they_are_made(tmp_path) -> None:
    first, second = ProjectFactory(), ProjectFactory()
    made = [ItemFactory(project=first), ItemFactory(project=second), ItemFactory(project=first)]
    assert [item.number for item in made] == [1, 1, 2]  # handed back by the INSERT, not only stored
    bulk = Item.objects.bulk_create([ItemFactory.build(project=first, content_hash=f"bulk-{n}") for n in range(3)])
    assert [item.number for item in bulk] == [3, 4, 5]
    batch = run_import(second, write_rows(tmp_path / "a.jsonl", [trl(n) for n in range(3)]), "trl")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    assert [n for n, _ in numbers(second)] == [1, 2, 3, 4]
    assert [n for n, _ in numbers(first)] == [1, 2, 3, 4, 5]


def test_an_import_numbers_in_file_order_and_spends_no_number_on_duplicates_or_failures(tmp_path) -> None:
    project = ProjectFactory()
    rows = [trl(1), trl(2), trl(1), trl(3), trl(2)]  # two repeats within the file
    batch = run_import(project, write_rows(tmp_path / "a.jsonl", rows), "trl")
    assert (batch.items_created, batch.duplicates_skipped) == (3, 2)
    assert numbers(project) == [(1, "Question 1?"), (2, "Question 2?"), (3, "Question 3?")]

    failed = run_import(project, write_lines(tmp_path / "bad.jsonl", [*map(_json, [trl(4), trl(5)]), "{oops"]), "trl")
    assert failed.status == ImportBatch.Status.FAILED
    # Repeats of the project's items, then new ones: numbered on from 3, as if the failed import never ran.
    again = run_import(project, write_rows(tmp_path / "b.jsonl", [trl(2), trl(6), trl(3), trl(7)]), "trl")
    assert (again.items_created, again.duplicates_skipped) == (2, 2)
    assert numbers(project)[3:] == [(4, "Question 6?"), (5, "Question 7?")]


def _json(row: dict) -> str:
    import json

    return json.dumps(row)


def test_the_migration_numbers_existing_items_in_the_order_they_arrived() -> None:
    migration = importlib.import_module("annotate.migrations.0011_item_number")
    first, second = ProjectFactory(), ProjectFactory()
    items = [ItemFactory(project=project) for project in (first, second, first, first, second)]
    with connection.cursor() as cursor:  # as before the migration: no numbers (rolled back with the test)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE annotate_item DROP CONSTRAINT item_unique_number")
        cursor.execute("UPDATE annotate_item SET number = 0")
        cursor.execute(migration.NUMBER_EXISTING)
    for item in items:
        item.refresh_from_db()
    assert [item.number for item in items] == [1, 1, 2, 3, 2]


def test_pages_show_and_find_items_by_their_number_in_the_project(login) -> None:  # type: ignore[no-untyped-def]
    other = ProjectFactory()
    for _ in range(5):
        ItemFactory(project=other)  # global ids run ahead of this project's numbers
    project = ProjectFactory()
    items = [ItemFactory(project=project) for _ in range(3)]
    assert [item.number for item in items] == [1, 2, 3]
    assert items[2].pk > 3
    curator = login(member(project, Role.CURATOR))

    listing = curator.get(reverse("annotate:item_list", args=[project.pk]))
    cells = [row.item.number for row in listing.context["rows"]]
    assert cells == [1, 2, 3]
    assert f'for="pick-{items[1].pk}">Select item 2</label>' in listing.content.decode()
    descending = curator.get(reverse("annotate:item_list", args=[project.pk]), {"sort": "-number"})
    assert [row.item.number for row in descending.context["rows"]] == [3, 2, 1]

    found = curator.get(reverse("annotate:item_list", args=[project.pk]), {"q": "#2"})
    assert [row.item.pk for row in found.context["rows"]] == [items[1].pk]
    by_id = curator.get(reverse("annotate:item_list", args=[project.pk]), {"q": str(items[2].pk)})
    assert by_id.context["rows"] == []  # a number, never an id

    page = curator.get(reverse("annotate:item_detail", args=[project.pk, items[1].pk]))
    assert "<h1>Item 2 " in page.content.decode()
    adjudicate = curator.get(reverse("curation:adjudicate", args=[project.pk, items[2].pk]))
    assert "Adjudicate item 3 " in adjudicate.content.decode()
