"""The agreement measures read the strengths packed per item (curation.selectors_quality.compacted, a few columns)
rather than as items x annotators: the same figures, at a fraction of the memory."""

import numpy as np
import pytest

from curation.metrics import fleiss_kappa, krippendorff_alpha, modal_units, pairwise_agreement
from curation.selectors_quality import compacted


@pytest.mark.parametrize("seed", range(4))
def test_packed_values_give_the_figures_of_the_full_matrix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    full = rng.integers(-3, 4, (300, 25)).astype(np.float64)
    full[rng.random(full.shape) < 0.85] = np.nan
    rows, cols = np.nonzero(~np.isnan(full))
    shuffled = rng.permutation(len(rows))
    packed = compacted(rows[shuffled], full[rows, cols][shuffled], len(full))
    assert packed.shape[1] == int((~np.isnan(full)).sum(axis=1).max())
    for measure in (
        lambda m: krippendorff_alpha(m, "ordinal"),
        lambda m: krippendorff_alpha(np.sign(m), "nominal"),
        lambda m: pairwise_agreement(np.sign(m)),
        lambda m: fleiss_kappa(modal_units(np.sign(m))),
        lambda m: len(modal_units(m)),
    ):
        assert measure(packed) == pytest.approx(measure(full), abs=1e-12)


def test_nothing_to_pack_gives_an_empty_matrix() -> None:
    assert compacted(np.array([], dtype=np.int64), np.array([]), 3).shape == (3, 0)
