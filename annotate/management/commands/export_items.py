"""Export every item with all of its annotations: `manage.py export_items --project P --format jsonl OUT`."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.selectors import project_by_ref
from annotate.services.exports import ITEM_CHUNK, ITEM_EXPORT_FORMATS, item_records, items_export, items_write


class Command(BaseCommand):
    help = (
        "Write each item of a project with its group and every annotation (strength, ratings, spans, missing "
        "information, corrections, who and when) as JSON lines or Parquet."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument("--format", default="jsonl", choices=ITEM_EXPORT_FORMATS, help="Output format.")
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=ITEM_CHUNK,
            help=f"Items read from the database at a time, and per Parquet row group (default {ITEM_CHUNK}).",
        )
        parser.add_argument(
            "out", help='Output file ("-" for standard output, JSON lines only; a .jsonl.gz name is gzip-compressed).'
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_by_ref(options["project"])
        if project is None:
            raise CommandError(f"No project with the name or id {options['project']!r}.")
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        if options["out"] == "-":
            if options["format"] != "jsonl":
                raise CommandError("Only JSON lines can go to standard output; name a file for Parquet.")
            count = items_write(
                records=item_records(project=project, chunk_size=options["chunk_size"]), sink=self.stdout
            )
            self.stderr.write(f"Wrote {count} items.")
            return
        out = Path(options["out"])
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent}: no such directory.")
        count = items_export(project=project, path=out, format=options["format"], chunk_size=options["chunk_size"])
        self.stdout.write(f"Wrote {count} items to {out}.")
