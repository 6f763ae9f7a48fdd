"""Per-project item numbers (Item.number): the column, the numbers of the items there are (in id order, which is
the order they arrived in), the trigger that numbers a row inserted with 0, and the indexes that read items in
number order."""

from django.db import migrations, models

# concord.locks.ITEM_NUMBERS, written out: a migration keeps the value it was written with.
ITEM_NUMBERS_LOCK = 8

NUMBER_EXISTING = """
UPDATE annotate_item AS item SET number = numbered.number
FROM (SELECT id, row_number() OVER (PARTITION BY project_id ORDER BY id) AS number FROM annotate_item) AS numbered
WHERE item.id = numbered.id
"""

# Row by row, for whatever inserts items without numbering them (the ORM, factories, scripts): the importer
# numbers its chunks itself, so its rows never fire it (WHEN). The rows an INSERT already added are visible to
# the function's query, so a multi-row INSERT numbers its rows one after another.
CREATE_TRIGGER = f"""
CREATE FUNCTION annotate_item_number() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({ITEM_NUMBERS_LOCK}, NEW.project_id::integer);
    SELECT coalesce(max(number), 0) + 1 INTO NEW.number FROM annotate_item WHERE project_id = NEW.project_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER annotate_item_number BEFORE INSERT ON annotate_item
FOR EACH ROW WHEN (NEW.number = 0) EXECUTE FUNCTION annotate_item_number();
"""

DROP_TRIGGER = """
DROP TRIGGER annotate_item_number ON annotate_item;
DROP FUNCTION annotate_item_number();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0010_item_selection_rank"),
    ]

    operations = [
        migrations.AddField(
            model_name="item",
            name="number",
            field=models.PositiveIntegerField(db_default=0, editable=False),
        ),
        migrations.RunSQL(NUMBER_EXISTING, migrations.RunSQL.noop),
        migrations.RunSQL(CREATE_TRIGGER, DROP_TRIGGER),
        migrations.AddConstraint(
            model_name="item",
            constraint=models.UniqueConstraint(fields=("project", "number"), name="item_unique_number"),
        ),
        migrations.RemoveIndex(model_name="item", name="item_source"),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(fields=["project", "source", "number"], name="item_source"),
        ),
        migrations.AlterField(
            model_name="item",
            name="import_batch",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=models.deletion.SET_NULL,
                to="annotate.importbatch",
            ),
        ),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(fields=["import_batch", "number"], name="item_by_import"),
        ),
    ]
