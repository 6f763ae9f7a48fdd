"""Count every item's annotations again and recompute its label summary: `manage.py repair_label_summaries`
(every project) or `--project P`. The write paths keep these columns; this repairs rows written around them."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.models import Project
from annotate.selectors import project_by_ref
from annotate.services.label_summary import project_label_summaries_refresh


class Command(BaseCommand):
    help = "Recount each item's annotations and recompute its label summary (states, queue, versions read these)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", help="Project id or exact name; every project when left out.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["project"]:
            project = project_by_ref(options["project"])
            if project is None:
                raise CommandError(f"No project with the name or id {options['project']!r}.")
            projects = [project]
        else:
            projects = list(Project.objects.order_by("pk"))
        for project in projects:
            count = project_label_summaries_refresh(project_id=project.pk)
            self.stdout.write(f"{project.name}: {count} items counted again.")
