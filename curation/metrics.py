"""Agreement between annotators. Pure numpy (and the krippendorff package, numpy only): no Django import.

Most functions take a reliability matrix: one row per unit (an item, or an item's response for ratings), one
column per coder (annotator), NaN where that coder gave no value. Values are numbers: strengths -3..3, signs
-1/0/+1, ratings 0..4.
"""

from typing import Literal

import krippendorff
import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
Level = Literal["nominal", "ordinal", "interval"]


def _value_counts(matrix: Matrix) -> tuple[Matrix, npt.NDArray[np.int64]]:
    """The distinct values, sorted, and how often each unit got each one (units x values)."""
    observed = ~np.isnan(matrix)
    values = np.unique(matrix[observed])
    counts = np.zeros((matrix.shape[0], len(values)), dtype=np.int64)
    rows, cols = np.nonzero(observed)
    np.add.at(counts, (rows, np.searchsorted(values, matrix[rows, cols])), 1)
    return values, counts


def krippendorff_alpha(matrix: Matrix, level: Level = "nominal") -> float:
    """Krippendorff's alpha over a units x coders matrix with NaN for missing values, by the krippendorff package
    (the reference implementation), fed each unit's count of each value rather than the matrix itself, so the
    memory it needs grows with the values used, not with the coders.

    Units with fewer than two values are not pairable and drop out. NaN when alpha is undefined: no unit with two
    values, or a single value throughout (no expected disagreement)."""
    values, counts = _value_counts(np.asarray(matrix, dtype=np.float64))
    counts = counts[counts.sum(axis=1) >= 2]
    if len(values) < 2 or not len(counts):
        return float("nan")
    try:
        return float(krippendorff.alpha(value_counts=counts, value_domain=values, level_of_measurement=level))
    except ValueError:  # a single value among the pairable units: alpha is undefined
        return float("nan")


def pairwise_agreement(matrix: Matrix) -> float:
    """Share of coder pairs on the same unit that gave the same value, pooled over all pairs (so a unit with
    more coders has more pairs). NaN when no unit has two values."""
    _, counts = _value_counts(np.asarray(matrix, dtype=np.float64))
    per_unit = counts.sum(axis=1)
    pairs = (per_unit * (per_unit - 1)).sum()
    if pairs == 0:
        return float("nan")
    return float((counts * (counts - 1)).sum() / pairs)


def cohen_kappa(first: Matrix, second: Matrix) -> float:
    """Cohen's kappa of two coders over the units both coded (NaN elsewhere is skipped)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    both = ~np.isnan(first) & ~np.isnan(second)
    first, second = first[both], second[both]
    if len(first) == 0:
        return float("nan")
    values = np.unique(np.concatenate([first, second]))
    p_first = (first[:, None] == values).mean(axis=0)
    p_second = (second[:, None] == values).mean(axis=0)
    observed = float((first == second).mean())
    expected = float((p_first * p_second).sum())
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa_counts(counts: npt.ArrayLike) -> float:
    """Fleiss' kappa from a units x categories table of how many raters chose each category.

    Fleiss' kappa assumes the same number of raters on every unit; raises ValueError when the counts vary
    (see `modal_units` for keeping only the units with the usual number)."""
    table = np.asarray(counts, dtype=np.float64)
    raters = table.sum(axis=1)
    if len(table) == 0 or raters[0] < 2:
        return float("nan")
    if not np.all(raters == raters[0]):
        raise ValueError("Fleiss' kappa needs the same number of raters on every unit")
    r = raters[0]
    p_category = table.sum(axis=0) / table.sum()
    p_unit = ((table * (table - 1)).sum(axis=1)) / (r * (r - 1))
    observed, expected = p_unit.mean(), (p_category**2).sum()
    return float("nan") if expected == 1 else float((observed - expected) / (1 - expected))


def modal_units(matrix: Matrix) -> Matrix:
    """The rows with the most common number of values (at least two): where Fleiss' kappa applies when raters
    per unit vary. Ties go to the larger number of raters."""
    matrix = np.asarray(matrix, dtype=np.float64)
    per_unit = (~np.isnan(matrix)).sum(axis=1)
    per_unit_pairable = per_unit[per_unit >= 2]
    if len(per_unit_pairable) == 0:
        return matrix[:0]
    frequency = np.bincount(per_unit_pairable)
    modal = len(frequency) - 1 - int(np.argmax(frequency[::-1]))
    return matrix[per_unit == modal]


def fleiss_kappa(matrix: Matrix) -> float:
    """Fleiss' kappa of a units x coders matrix in which every unit has the same number of values (ValueError
    otherwise); which coder gave which value does not matter to it."""
    _, counts = _value_counts(np.asarray(matrix, dtype=np.float64))
    return fleiss_kappa_counts(counts)
