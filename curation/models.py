"""Curation: flags, adjudications, and frozen dataset versions that training jobs consume."""

from django.conf import settings
from django.db import models

from annotate.models import Item, JobStatus, Project


class ItemFlag(models.Model):
    """An annotator or curator saying an item needs a curator's look (broken, ambiguous, harmful...)."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="flags")
    raised_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="item_flags")
    reason = models.CharField(max_length=500)
    resolved = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "raised_by"], name="item_flag_unique_user")]

    def __str__(self) -> str:
        return f"Flag on {self.item} by {self.raised_by}"


class Adjudication(models.Model):
    """A curator's decision on an item. Decisions are never edited: a new one supersedes the last, so the
    history of who decided what and why stays."""

    class Decision(models.TextChoices):
        LABEL = "label", "Final label set"
        AMBIGUOUS = "ambiguous", "Ambiguous: no right answer"
        EXCLUDE = "exclude", "Excluded from datasets"
        MORE = "more", "More annotations requested"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="adjudications")
    curator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="adjudications")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    # The final label when decision == LABEL: strength on the project's scale, ratings {"a": {...}, "b": {...}}.
    strength = models.SmallIntegerField(null=True, blank=True)
    ratings = models.JSONField(default=dict, blank=True)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["item", "-created_at"], name="adjudication_latest")]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} on {self.item} by {self.curator}"


class DatasetVersion(models.Model):
    """A curated dataset. A draft holds the filters it is built from; freezing copies its rows, after which
    nothing about it changes: later edits to annotations do not reach it."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FREEZING = "freezing", "Freezing"
        FROZEN = "frozen", "Frozen"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200)
    projects = models.ManyToManyField(Project, related_name="dataset_versions")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children", help_text="Lineage."
    )
    # States, minimum agreement, provenance, sources, split fractions and seed: see curation.services.
    filters = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    content_hash = models.CharField(max_length=64, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    frozen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class DatasetRow(models.Model):
    """One training example of a frozen version, copied at freeze time."""

    # What a row is: the fields its content hash covers and every export carries, in this order.
    CONTENT_FIELDS = (
        "position",
        "item_id",
        "split",
        "prompt",
        "context",
        "chosen",
        "rejected",
        "margin",
        "weight",
        "provenance",
        "source",
        "annotation_ids",
        "labels",
    )

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VALIDATION = "validation", "Validation"
        TEST = "test", "Test"

    class Provenance(models.TextChoices):
        CONSENSUS = "human_consensus", "Human consensus"
        ADJUDICATED = "adjudicated", "Adjudicated"
        IMPORTED = "imported", "Imported label"
        AI_ACCEPTED = "ai_accepted", "AI-accepted"
        AI_FLIPPED = "ai_flipped", "AI-flipped"
        AI_LABELLED = "ai_labelled", "AI-labelled"
        GOLD_ANSWER = "gold_answer", "Gold answer"

    # No index of its own: the unique (version, position) index serves every lookup by version, and a freeze
    # writes a million rows into one index fewer.
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="rows", db_index=False)
    position = models.PositiveIntegerField()
    # The item it came from; kept as a plain id so that deleting items never changes a frozen version.
    item_id = models.BigIntegerField()
    split = models.CharField(max_length=16, choices=Split.choices)
    prompt = models.JSONField()
    context = models.TextField(blank=True)
    chosen = models.TextField()
    rejected = models.TextField()
    margin = models.FloatField()
    weight = models.FloatField(default=1.0)
    provenance = models.CharField(max_length=24, choices=Provenance.choices)
    source = models.CharField(max_length=200, blank=True)
    annotation_ids = models.JSONField(default=list)
    # Per-response labels of the chosen and rejected response: consensus ratings, spans, missing information.
    labels = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "position"], name="dataset_row_unique_position")]
        indexes = [models.Index(fields=["version", "split", "position"], name="dataset_row_split")]

    def __str__(self) -> str:
        return f"Row {self.position} of {self.version}"


class ExportJob(models.Model):
    """An export of a frozen version to a file, run by a Celery worker with its progress in this row."""

    class Format(models.TextChoices):
        TRL = "trl", "TRL pairwise JSONL"
        PARQUET = "parquet", "Parquet"
        FINE = "fine", "Fine-grained JSONL"
        CSV = "csv", "CSV"

    Status = JobStatus

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=16, choices=Format.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    rows_done = models.PositiveIntegerField(default=0)
    rows_total = models.PositiveIntegerField(default=0)
    file = models.FileField(upload_to="exports/%Y/%m/", blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_format_display()} of {self.version} ({self.status})"


class ProjectQuality(models.Model):
    """A project's annotator-quality statistics (agreement, Dawid-Skene reliabilities, gold accuracy, speed),
    computed by a worker and kept here, one row per project, so the annotators page reads one row instead of
    every annotation. The row is also the refresh's job: what was asked for last and how far it got."""

    Status = JobStatus

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="quality")
    # The refresh asked for last. `force`: compute even when no label changed since the last result; `again`:
    # asked while one was running, so another follows it.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    force = models.BooleanField(default=False)
    again = models.BooleanField(default=False)
    requested_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    heard_at = models.DateTimeField(null=True, blank=True, help_text="The running refresh's last progress.")
    step = models.PositiveSmallIntegerField(default=0)
    steps = models.PositiveSmallIntegerField(default=0)
    step_name = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    # The last result (curation.selectors_quality.QualityReport as JSON), and what it was computed over.
    report = models.JSONField(null=True, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    compute_seconds = models.FloatField(default=0)
    annotation_count = models.PositiveIntegerField(default=0)
    # What the labels looked like (annotations, gold answers, weights): a refresh that finds it unchanged keeps
    # the result and only records when it looked (checked_at).
    fingerprint = models.CharField(max_length=64, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "project qualities"

    def __str__(self) -> str:
        return f"Quality of {self.project} ({self.status})"
