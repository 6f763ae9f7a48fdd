"""Projects made before label schemas get version 1: the preference-only labeling they had."""

from django.db import migrations

PREFERENCE_ONLY = {
    "preference": {"enabled": True, "scale": "seven", "justification": "optional", "justification_min_chars": 0},
    "attributes": [],
    "spans": {"enabled": False, "categories": [], "missing": []},
    "correction": {"enabled": False},
}


def forwards(apps, schema_editor):
    Project = apps.get_model("annotate", "Project")
    LabelSchema = apps.get_model("annotate", "LabelSchema")
    Annotation = apps.get_model("annotate", "Annotation")
    for project in Project.objects.all():
        schema = LabelSchema.objects.create(project=project, version=1, definition=PREFERENCE_ONLY)
        Annotation.objects.filter(item__project=project, schema__isnull=True).update(schema=schema)


class Migration(migrations.Migration):
    dependencies = [("annotate", "0002_fine_grained_labels")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
