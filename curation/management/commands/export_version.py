"""Export a frozen dataset version: `manage.py export_version --project P --version-id ID --format trl OUT`, or
freeze a new one from the project's labels first: `manage.py export_version --project P --freeze NAME OUT`.

Every export of labels goes through a frozen version, so it is decided by the same rules as the pages
(annotate.rules), recorded with its manifest, and can be exported again byte for byte."""

import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.selectors import project_by_ref
from curation.aggregation import CONSENSUS_RULES
from curation.models import DatasetVersion, ExportJob
from curation.services.version_exports import version_export, version_export_file
from curation.services.version_rows import DEFAULT_STATES, STATES, VersionFilters
from curation.services.versions import VersionError, dataset_version_create, dataset_version_freeze


class Command(BaseCommand):
    help = "Write a frozen dataset version of a project (or a newly frozen one) as TRL, fine-grained, CSV or Parquet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--version-id", type=int, dest="version_id", help="The id of a frozen version of the project."
        )
        which.add_argument("--freeze", metavar="NAME", help="Freeze a new version of the project under this name.")
        parser.add_argument("--format", default="trl", choices=ExportJob.Format.values, help="Output format.")
        parser.add_argument(
            "--states", nargs="+", choices=STATES, default=list(DEFAULT_STATES), help="With --freeze: item states."
        )
        parser.add_argument("--consensus", choices=list(CONSENSUS_RULES), default="mean", help="With --freeze.")
        parser.add_argument("--min-agreement", type=float, default=0.0, help="With --freeze: 0 to 1.")
        parser.add_argument("--seed", type=int, default=0, help="With --freeze: seed of the split by prompt.")
        parser.add_argument("out", help='Output file ("-" for standard output, except Parquet).')

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_by_ref(options["project"])
        if project is None:
            raise CommandError(f"No project with the name or id {options['project']!r}.")
        version = self._version(project, options)
        if options["out"] == "-":
            if options["format"] == "parquet":
                raise CommandError("Parquet cannot go to standard output: name a file.")
            rows = self._to_stdout(version, options["format"])
            self.stderr.write(f"Wrote {rows} rows of version {version.pk} ({version.name}).")
            return
        out = Path(options["out"])
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent}: no such directory.")
        if out.exists():
            raise CommandError(f"{out}: already exists; choose a new name.")
        rows = version_export_file(version=version, format=options["format"], path=out)
        self.stdout.write(f"Wrote {rows} rows of version {version.pk} ({version.name}) to {out}.")

    def _version(self, project: Any, options: dict[str, Any]) -> DatasetVersion:
        if options["version_id"] is not None:
            version = DatasetVersion.objects.filter(pk=options["version_id"], projects=project).first()
            if version is None or version.status != DatasetVersion.Status.FROZEN:
                raise CommandError(f"No frozen version {options['version_id']} of {project.name}.")
            return version
        filters = VersionFilters(
            states=tuple(options["states"]),
            consensus=options["consensus"],
            min_agreement=options["min_agreement"],
            seed=options["seed"],
        )
        try:
            draft = dataset_version_create(name=options["freeze"], projects=[project], filters=filters, created_by=None)
            version = dataset_version_freeze(version=draft)
        except VersionError as error:
            raise CommandError(str(error)) from None
        self.stderr.write(f"Froze version {version.pk} ({version.name}): {version.row_count} rows.")
        return version

    def _to_stdout(self, version: DatasetVersion, format: str) -> int:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "export"
            rows = version_export(version=version, format=format, path=path)
            with path.open(encoding="utf-8") as exported:
                shutil.copyfileobj(exported, self.stdout)
        return rows
