"""Export a project's consensus pairs: `manage.py export_pairs --project P --format trl OUT`."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.selectors import project_by_ref
from annotate.services.exports import EXPORT_FORMATS, pairs_export, pairs_write


class Command(BaseCommand):
    help = "Write items whose annotators agree (mean strength not a tie) as preference pairs, one JSON per line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument("--format", default="trl", choices=EXPORT_FORMATS, help="Output format.")
        parser.add_argument(
            "--margin",
            action="store_true",
            help="Add each pair's margin: how strongly annotators prefer the chosen response, 0 to 1 (strengths "
            "divided by the top of their scale, so seven-point and binary labels compare).",
        )
        parser.add_argument("out", help='Output file ("-" for standard output; a .gz name is gzip-compressed).')

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_by_ref(options["project"])
        if project is None:
            raise CommandError(f"No project with the name or id {options['project']!r}.")
        if options["out"] == "-":
            rows = pairs_write(project=project, sink=self.stdout, format=options["format"], margin=options["margin"])
            # The rows own standard output; the count goes to standard error.
            self.stderr.write(f"Wrote {rows} pairs.")
            return
        out = Path(options["out"])
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent}: no such directory.")
        rows = pairs_export(project=project, path=out, format=options["format"], margin=options["margin"])
        self.stdout.write(f"Wrote {rows} pairs to {out}.")
