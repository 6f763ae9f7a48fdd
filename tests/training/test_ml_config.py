"""TrainConfig, and that training.ml stays free of Django (it runs inside a Celery worker's child, and in tests)."""

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from training.ml.config import OBJECTIVES, TrainConfig, default_backbone

ML_DIR = Path(__file__).resolve().parents[2] / "training" / "ml"


def test_every_field_has_help() -> None:
    assert all(f.metadata.get("help") for f in fields(TrainConfig))


def test_it_round_trips_through_json_data() -> None:
    config = TrainConfig(backbone="/models/x", objective="combined", attributes=("helpful", "correct"), seed=3)
    data = config.to_dict()
    assert data["attributes"] == ["helpful", "correct"]
    assert TrainConfig.from_dict(data) == config
    assert TrainConfig.from_dict(data).fingerprint() == config.fingerprint()


def test_it_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"objective": "dpo"}, "objective"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"precision": "int8"}, "precision"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"objective": "regression"}, "attributes"),
        ({"objective": "combined", "attributes": ("a", "a")}, "attributes"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
    ],
)
def test_validate_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainConfig(backbone="/m", **changes).validate()


def test_outputs_follow_the_objective() -> None:
    assert TrainConfig(backbone="/m", objective="bt", attributes=("a",)).num_outputs == 1
    assert TrainConfig(backbone="/m", objective="combined", attributes=("a", "b")).num_outputs == 3
    assert set(OBJECTIVES) == {"bt", "bt_margin", "bt_soft", "regression", "combined"}


def test_the_default_backbone_is_the_packaged_minilm() -> None:
    path = Path(default_backbone())
    assert (path / "model.safetensors").exists()
    assert (path / "tokenizer.json").exists()
    assert TrainConfig().backbone == str(path)


def test_no_module_imports_django() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+django\b", re.MULTILINE)
    offenders = [p.name for p in ML_DIR.glob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_config_imports_neither_torch_nor_django() -> None:
    # The web side builds TrainConfigs; importing torch there would cost seconds and memory per web worker.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys, training.ml.config; "
        "assert not {'torch', 'transformers', 'django'} & {m.split('.')[0] for m in sys.modules}, 'heavy import'"
    )
    root = ML_DIR.parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**env, "PYTHONPATH": str(root)})
