"""Gold accuracy (annotate.selectors.gold_scores) is one GROUP BY in SQL, ratings compared with jsonb operators:
it agrees with the rule in Python (sign of the preference; each expected rating right within one point) on
random cases, and reads only the project's gold items' human annotations."""

import random

import pytest

from annotate.models import Annotation, GoldAnswer, Item
from annotate.rules import sign
from annotate.selectors import GoldScore, gold_scores
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

ATTRIBUTES = ("helpfulness", "correctness", "verbosity")


def python_gold_scores(project) -> list[GoldScore]:  # type: ignore[no-untyped-def]
    """The rule as Python over every annotation: what the SQL must agree with."""
    tallies: dict[str, list[int]] = {}
    rows = Annotation.objects.filter(item__project=project, item__is_gold=True, origin=Annotation.Origin.HUMAN)
    for annotation in rows.select_related("annotator", "item__gold_answer").order_by("annotator__username", "id"):
        expected = annotation.item.gold_answer
        tally = tallies.setdefault(annotation.annotator.get_username(), [0, 0, 0, 0])
        if annotation.strength is not None:
            tally[0] += 1
            tally[1] += sign(annotation.strength) == expected.preference_sign
        for side, values in (expected.ratings or {}).items():
            for name, value in values.items():
                given = annotation.ratings.get(side, {}).get(name)
                if given is not None:
                    tally[2] += 1
                    tally[3] += abs(given - value) <= 1
    return [GoldScore(name, *tally) for name, tally in tallies.items()]


def some_ratings(rng: random.Random) -> dict[str, dict[str, int]]:
    """Ratings of some attributes of some responses, 0..4."""
    return {
        side: {name: rng.randint(0, 4) for name in ATTRIBUTES if rng.random() < 0.7}
        for side in ("a", "b")
        if rng.random() < 0.8
    }


def gold_item(project, rng: random.Random) -> Item:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    GoldAnswer.objects.create(item=item, preference_sign=rng.choice([-1, 0, 1]), ratings=some_ratings(rng))
    Item.objects.filter(pk=item.pk).update(is_gold=True)
    return item


@pytest.mark.parametrize("seed", range(3))
def test_the_sql_agrees_with_the_rule_in_python(seed: int) -> None:
    rng = random.Random(seed)
    project = ProjectFactory()
    annotators = [member(project, username=f"gold{seed}-{n}") for n in range(4)]
    items = [gold_item(project, rng) for _ in range(8)] + [ItemFactory(project=project)]  # and one ordinary item
    for item in items:
        for annotator in annotators:
            if rng.random() < 0.8:
                strength = rng.choice([None, -3, -1, 0, 1, 2, 3])
                origin = rng.choice([Annotation.Origin.HUMAN] * 4 + [Annotation.Origin.IMPORTED])
                AnnotationFactory(
                    item=item, annotator=annotator, strength=strength, origin=origin, ratings=some_ratings(rng)
                )
    elsewhere = ProjectFactory()
    AnnotationFactory(item=gold_item(elsewhere, rng), annotator=annotators[0], strength=1)
    expected = python_gold_scores(project)
    assert expected, "the case has gold annotations"
    assert gold_scores(project=project) == expected


def test_each_expected_rating_counts_within_one_point() -> None:
    project = ProjectFactory()
    item = ItemFactory(project=project)
    GoldAnswer.objects.create(item=item, preference_sign=1, ratings={"a": {"helpfulness": 3, "verbosity": 1}})
    Item.objects.filter(pk=item.pk).update(is_gold=True)
    close, far = member(project, username="close"), member(project, username="far")
    AnnotationFactory(item=item, annotator=close, strength=2, ratings={"a": {"helpfulness": 4, "verbosity": 1}})
    AnnotationFactory(item=item, annotator=far, strength=-1, ratings={"a": {"helpfulness": 1}, "b": {"verbosity": 1}})
    assert gold_scores(project=project) == [GoldScore("close", 1, 1, 2, 2), GoldScore("far", 1, 0, 1, 0)]


def test_it_takes_one_query(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    with django_assert_num_queries(1):
        assert gold_scores(project=project) == []
