from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0007_item_priority_item_item_routed_order"),
    ]

    operations = [
        migrations.AddField(
            model_name="item",
            name="model_probability_b",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="item",
            name="review_reasons",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="item",
            name="review_severity",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="project",
            name="review_key",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="project",
            name="review_model_threshold",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(fields=["project", "id"], name="item_by_project"),
        ),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(fields=["project", "source"], name="item_source"),
        ),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(
                condition=models.Q(("review_severity__isnull", False)),
                fields=["project", "-review_severity", "-annotation_count", "id"],
                include=("review_reasons",),
                name="item_review_order",
            ),
        ),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(
                condition=models.Q(("extra_overlap__gt", 0)),
                fields=["project", "extra_overlap"],
                name="item_extra_asked",
            ),
        ),
    ]
