"""Import a file of items into a project, synchronously: `manage.py import_items --project P [--format F] FILE`
(the format is detected from the file's first records unless given)."""

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.formats import FORMATS, ImportFormatError
from annotate.models import ImportBatch
from annotate.selectors import ImportProgress, import_batch_annotation_count, project_by_ref
from annotate.services.imports import AUTO_FORMAT, import_batch_create, import_format_detect, item_import


class Command(BaseCommand):
    help = (
        "Import prompts with two or more responses (and the labels that come with them) into a project; "
        "a bad line or record anywhere imports nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument(
            "--format",
            default=AUTO_FORMAT,
            choices=[AUTO_FORMAT, *FORMATS],
            help="File format (default: auto, detected from the file's first records).",
        )
        parser.add_argument("--seed", type=int, help="Seed of the chosen/rejected to A/B shuffle (default: random).")
        parser.add_argument("file", type=Path, help="JSON lines, or a JSON array for some formats; plain or gzip.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        project = project_by_ref(options["project"])
        if project is None:
            raise CommandError(f"No project with the name or id {options['project']!r}.")
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        format = options["format"] if options["format"] != AUTO_FORMAT else self._detect(path)
        batch = import_batch_create(
            project=project, created_by=None, file_name=path.name, format=format, seed=options["seed"]
        )
        started = time.monotonic()
        progress = self._show_progress if options["verbosity"] >= 2 else None
        batch = item_import(batch=batch, path=path, progress=progress)
        if batch.status != ImportBatch.Status.DONE:
            # The batch names the file by its base name; on the command line, say the path as given.
            raise CommandError(f"{path}{batch.error.removeprefix(batch.file_name)}")
        annotations = import_batch_annotation_count(batch)
        self.stdout.write(
            f"Read {batch.records_read} records: {batch.items_created} items created, "
            f"{batch.duplicates_skipped} duplicates skipped"
            + (f", {annotations} imported annotations on them" if annotations else "")
            + f" (seed {batch.seed}, import batch {batch.pk}, {time.monotonic() - started:.1f} s)."
        )

    def _detect(self, path: Path) -> str:
        try:
            with path.open("rb") as raw:
                detection = import_format_detect(raw=raw)
        except ImportFormatError as error:
            raise CommandError(error.for_file(str(path))) from None
        self.stdout.write(detection.describe())
        return detection.format

    def _show_progress(self, progress: ImportProgress) -> None:
        self.stderr.write(f"{progress.records_read} records, {progress.percent}% of the file")
