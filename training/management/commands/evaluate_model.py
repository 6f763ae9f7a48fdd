"""Evaluate a reward model on a preference file: `manage.py evaluate_model --model ID_OR_PATH --format trl FILE`."""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.formats import ImportFormatError, LineReader, PairRecord, PreferenceRecord, parse_records
from training.models import RewardModel

FORMATS = ("trl", "hh-rlhf", "pairs")


class Command(BaseCommand):
    help = "Evaluate a registered reward model (by id) or a model directory on a TRL, HH-RLHF or pairs file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, help="A RewardModel id, or a model directory.")
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--max-length", type=int, default=256)
        parser.add_argument("file", help="The preference file (JSON lines, optionally gzip-compressed).")

    def handle(self, *args: Any, **options: Any) -> None:
        from training.ml.evaluate import evaluate, length_baseline_accuracy

        model_dir = model_path(options["model"])
        examples = read_examples(Path(options["file"]), options["format"])
        if not examples:
            raise CommandError("the file holds no pair with a preference")
        metrics = evaluate(model_dir, examples, batch_size=options["batch_size"], max_length=options["max_length"])
        metrics["length_baseline_accuracy"] = length_baseline_accuracy(examples)
        metrics["pairs"] = len(examples)
        self.stdout.write(json.dumps(metrics, indent=2, sort_keys=True, default=str))


def model_path(given: str) -> Path:
    """A registered model's directory by id, else the given path, which must be a directory."""
    if given.isdigit():
        model = RewardModel.objects.filter(pk=int(given)).first()
        if model is None:
            raise CommandError(f"no reward model {given}")
        return Path(model.path)
    path = Path(given)
    if not path.is_dir():
        raise CommandError(f"{given} is neither a reward model id nor a model directory")
    return path


def read_examples(path: Path, file_format: str) -> list[Any]:
    """The file's records as PairExamples: chosen/rejected as they are; a labelled pair's preferred side first;
    pairs without a preference (no label, or a tie) are left out."""
    from training.ml.data import PairExample

    examples = []
    try:
        with path.open("rb") as raw:
            for record in parse_records(LineReader(raw), format=file_format):
                pair = _chosen_rejected(record)
                if pair is not None:
                    examples.append(PairExample(prompt=record.prompt, chosen=pair[0], rejected=pair[1]))
    except (OSError, ImportFormatError) as error:
        raise CommandError(f"cannot read {path}: {error}") from error
    return examples


def _chosen_rejected(record: Any) -> tuple[str, str] | None:
    if isinstance(record, PreferenceRecord):
        return record.chosen, record.rejected
    if isinstance(record, PairRecord) and record.label in (-1, 1):
        return (record.response_a, record.response_b) if record.label < 0 else (record.response_b, record.response_a)
    return None
