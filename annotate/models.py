"""Projects, items to label, annotations and work assignments."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Role(models.TextChoices):
    """Project roles, lowest to highest: each role can do what the ones below it can."""

    ANNOTATOR = "annotator", "Annotator"
    CURATOR = "curator", "Curator"
    ADMIN = "admin", "Admin"

    @classmethod
    def rank(cls, role: str) -> int:
        return [cls.ANNOTATOR, cls.CURATOR, cls.ADMIN].index(cls(role))


class JobStatus(models.TextChoices):
    """The states of a background job whose progress lives in its row (imports, exports, scoring)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    overlap = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="How many annotations each item should get.",
    )
    lease_minutes = models.PositiveSmallIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 60)],
        help_text="How long an item stays reserved for the annotator it was handed to.",
    )

    class PairMode(models.TextChoices):
        ALL = "all", "All pairs"
        ADJACENT = "adjacent", "Neighbours in the given order (1v2, 2v3, ...)"
        FIRST = "first", "The first response against each other one"

    pair_mode = models.CharField(
        max_length=16,
        choices=PairMode.choices,
        default=PairMode.ALL,
        help_text="Which pairs of an item with more than two responses annotators compare.",
    )
    gold_rate = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Share of items handed out that are gold items (known answers), while any are left to give.",
    )
    model_threshold = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.5), MaxValueValidator(1)],
        help_text="How sure the active reward model must be (its calibrated probability of the other side) before "
        "its disagreement with the annotators sends an item to the review queue.",
    )
    # What the items' review columns (Item.review_severity, model_probability_b) were last computed for: the rules'
    # version and the reward model and threshold the queue weighs annotators against (curation.services.review_state).
    # Emptied when a setting the review rules read changes, so the next look at the queue recomputes them.
    review_key = models.CharField(max_length=200, blank=True, default="")
    review_model_threshold = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    # Curators may pause an annotator (no new work is handed out) or discount their labels in aggregation.
    is_paused = models.BooleanField(default=False)
    weight = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="How much this annotator's labels count in weighted aggregation (1 = fully, 0 = not at all).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class LabelSchema(models.Model):
    """One version of what a project's annotators label. Versions are never edited: a change adds a version,
    and each annotation keeps the version it was made under."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_schemas")
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="label_schema_unique_version")]
        ordering = ["project", "-version"]

    def __str__(self) -> str:
        return f"{self.project} schema v{self.version}"


class ImportBatch(models.Model):
    """One imported file: what it was, who imported it, and what came of it."""

    Status = JobStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_batches")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    file_name = models.CharField(max_length=255)
    upload = models.FileField(upload_to="imports/%Y/%m/", blank=True)
    format = models.CharField(max_length=32)
    seed = models.BigIntegerField(help_text="Seed of the chosen/rejected to A/B shuffle.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    records_read = models.PositiveIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    items_created = models.PositiveIntegerField(default=0)
    duplicates_skipped = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.format}, {self.status})"


class ItemGroup(models.Model):
    """A prompt with K >= 2 responses (ranked replies, several model outputs). Annotators see two at a time:
    the group's items are its pairs, chosen by the project's pair mode."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="item_groups")
    import_batch = models.ForeignKey(ImportBatch, null=True, blank=True, on_delete=models.SET_NULL)
    prompt = models.JSONField()
    context = models.TextField(blank=True)
    # [{"key": "prediction 1", "text": "...", "meta": {...}}, ...]
    responses = models.JSONField()
    source = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Group {self.pk} ({len(self.responses)} responses)"


class Item(models.Model):
    """A prompt with two responses to compare: the unit of work handed to annotators."""

    class SourceLabel(models.IntegerChoices):
        A = -1, "A preferred"
        TIE = 0, "Tie"
        B = 1, "B preferred"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    # Indexed with the item number (item_by_import), which serves the foreign key's lookups too.
    import_batch = models.ForeignKey(ImportBatch, null=True, blank=True, on_delete=models.SET_NULL, db_index=False)
    # The item's number in its project, 1, 2, 3... in the order its items arrived: what people see, search for
    # and sort by (ids are global, and say nothing to a curator). The database numbers a row inserted with 0 (the
    # trigger of migration 0011, under the project's concord.locks.ITEM_NUMBERS), so every way of creating items numbers
    # them alike; the importer numbers a chunk itself in its INSERT, under the same lock (ItemCopier).
    number = models.PositiveIntegerField(db_default=0, editable=False)
    prompt = models.JSONField(help_text='Chat turns: [{"role": "user", "content": "..."}, ...]')
    # Reference material the responses should rest on (retrieved passages, a document); shown above the prompt.
    context = models.TextField(blank=True)
    response_a = models.TextField()
    response_b = models.TextField()
    # For a pair drawn from a group of K responses: the group and which two of its responses these are.
    group = models.ForeignKey(ItemGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="items")
    response_a_index = models.PositiveSmallIntegerField(null=True, blank=True)
    response_b_index = models.PositiveSmallIntegerField(null=True, blank=True)
    source = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    # Which side the original data preferred; for evaluation only, never shown to annotators.
    source_label = models.SmallIntegerField(choices=SourceLabel.choices, null=True, blank=True)
    # Submitted annotations, kept in step by annotation_submit under the item's row lock,
    # so that "least annotated first" is an index scan rather than a count per item.
    annotation_count = models.PositiveIntegerField(default=0)
    # Gold items have a known answer (GoldAnswer); every annotator may get them, regardless of overlap.
    is_gold = models.BooleanField(default=False)
    # Annotations wanted beyond the project's overlap: a curator asking for more opinions on a hard item.
    extra_overlap = models.PositiveSmallIntegerField(default=0)
    # Handed out before items of lower priority: pairs a curation round routes to the humans (0: ordinary).
    priority = models.PositiveIntegerField(default=0)
    # Handed out after the routed pairs and before the rest: the rank a selection job (training.services.selection)
    # gave an unlabelled item under its project's strategy, the most wanted highest (0: not selected).
    selection_rank = models.PositiveIntegerField(default=0)
    # What its annotations say (annotate.rules.LabelSummary), recomputed from them by
    # annotate.services.label_summary in every transaction that adds annotations, under the item's row lock: the
    # review queue, the dashboard and dataset versions read these columns rather than every annotation.
    human_count = models.PositiveIntegerField(default=0, help_text="Annotations made in Concord (not imported).")
    strength_count = models.PositiveIntegerField(default=0)
    prefer_a_count = models.PositiveIntegerField(default=0)
    prefer_b_count = models.PositiveIntegerField(default=0)
    strength_min = models.SmallIntegerField(null=True, blank=True)
    strength_max = models.SmallIntegerField(null=True, blank=True)
    strength_sum = models.IntegerField(default=0)
    rating_spread = models.PositiveSmallIntegerField(
        default=0, help_text="The widest max - min of one attribute of one response over the annotations."
    )
    # The review queue's view of the item, kept by curation.services.review_state whenever its labels, a curator's
    # decision, a flag or the queue's reward model change, so that any page of the queue, by any reason, is an index
    # scan: its severity while it is in the queue (NULL when it is not), the reasons as bits (REVIEW_REASON_BITS) and
    # the queue model's probability that B wins.
    review_severity = models.FloatField(null=True, blank=True)
    review_reasons = models.PositiveSmallIntegerField(default=0)
    model_probability_b = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="item_unique_content"),
            # Also the index of the items list in number order and of its windows.
            models.UniqueConstraint(fields=["project", "number"], name="item_unique_number"),
        ]
        indexes = [
            models.Index(
                fields=["project", "annotation_count", "id"], name="item_queue_order", condition=Q(is_gold=False)
            ),
            # The routed pairs, first in the queue: few, so a small partial index.
            models.Index(
                fields=["project", "-priority", "annotation_count", "id"],
                name="item_routed_order",
                condition=Q(is_gold=False, priority__gt=0),
            ),
            # The selected pairs, next: at most a selection batch per project, so a small partial index too.
            models.Index(
                fields=["project", "-selection_rank", "annotation_count", "id"],
                name="item_selected_order",
                condition=Q(is_gold=False, selection_rank__gt=0),
            ),
            models.Index(fields=["project", "id"], name="item_gold", condition=Q(is_gold=True)),
            # A project's items in id order: pages of the items list, chunks of whole-project passes.
            models.Index(fields=["project", "id"], name="item_by_project"),
            # The distinct sources of a project, read by skipping through it (curation.selectors_review), and a
            # source's items in number order (the items list).
            models.Index(fields=["project", "source", "number"], name="item_source"),
            # An import's items in number order (the items list), and the foreign key's lookups.
            models.Index(fields=["import_batch", "number"], name="item_by_import"),
            # The review queue, most severe first: only the items in it, so a small partial index.
            models.Index(
                fields=["project", "-review_severity", "-annotation_count", "id"],
                name="item_review_order",
                condition=Q(review_severity__isnull=False),
                # A filter by reason and its count read the index alone.
                include=["review_reasons"],
            ),
            # The items a curator asked more annotations of: few, and the largest ask bounds the open items' scan
            # (annotate.selectors.progress_for_annotator).
            models.Index(
                fields=["project", "extra_overlap"], name="item_extra_asked", condition=Q(extra_overlap__gt=0)
            ),
        ]

    def __str__(self) -> str:
        return f"Item {self.number} of project {self.project_id}"


# The bit of each review reason (annotate.rules.REASON_LABELS) in Item.review_reasons; the model's two reasons share
# one bit: which of them it is depends on the model the queue weighs annotators against.
REVIEW_REASON_BITS = {"sign": 1, "strength": 2, "rating": 4, "flagged": 8, "model": 16, "ensemble": 16}

# Item fields counted from its annotations, never set by hand.
LABEL_COUNTED_FIELDS = (
    "annotation_count",
    "human_count",
    "strength_count",
    "prefer_a_count",
    "prefer_b_count",
    "strength_min",
    "strength_max",
    "strength_sum",
    "rating_spread",
)


class GoldAnswer(models.Model):
    """The expected answer of a gold item, against which annotators' work is scored."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="gold_answer")
    # -1: A is better, 0: tie, +1: B is better (the sign of the strength, whatever the scale).
    preference_sign = models.SmallIntegerField(validators=[MinValueValidator(-1), MaxValueValidator(1)])
    # Optional: {"a": {"helpfulness": 3, ...}, "b": {...}}; ratings within one point count as right.
    ratings = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True, help_text="Why this is the answer; shown to curators.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Gold answer for {self.item}"


class Assignment(models.Model):
    """An item handed to an annotator: a lease while open, then submitted or skipped."""

    class Status(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.LEASED)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    skip_reason = models.CharField(max_length=500, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "annotator"], name="assignment_unique_annotator")]
        indexes = [
            models.Index(fields=["item", "expires_at"], name="assignment_live_lease", condition=Q(status="leased")),
            models.Index(fields=["annotator", "status"], name="assignment_by_annotator"),
        ]

    def __str__(self) -> str:
        return f"{self.item} to {self.annotator} ({self.status})"


class Annotation(models.Model):
    """One annotator's judgement of one item."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")

    class Origin(models.TextChoices):
        HUMAN = "human", "Labeled in Concord"
        IMPORTED = "imported", "Imported with the data"

    # RESTRICT: a schema version cannot go while annotations use it, but a project can be deleted whole.
    schema = models.ForeignKey(LabelSchema, null=True, blank=True, on_delete=models.RESTRICT)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.HUMAN)
    # -3..+3: negative favours response A, positive favours B, 0 is a tie (HelpSteer2-Preference). The binary
    # scale uses -1/0/+1. Empty when the schema asks for no preference.
    strength = models.SmallIntegerField(null=True, blank=True, validators=[MinValueValidator(-3), MaxValueValidator(3)])
    justification = models.TextField(blank=True)
    # Fine-grained labels, validated against the schema (annotate.labels):
    # ratings {"a": {"helpfulness": 3, ...}, "b": {...}}; spans [{"response": "a", "start": 0, "end": 12,
    # "category": "irrelevant"}]; missing [{"response": "b", "category": "missing_major"}];
    # corrections {"a": "edited text"}.
    ratings = models.JSONField(default=dict, blank=True)
    spans = models.JSONField(default=list, blank=True)
    missing = models.JSONField(default=list, blank=True)
    corrections = models.JSONField(default=dict, blank=True)
    seconds_spent = models.FloatField(default=0, validators=[MinValueValidator(0)])
    submission_uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="annotation_unique_annotator"),
            models.CheckConstraint(condition=Q(strength__gte=-3, strength__lte=3), name="annotation_strength_range"),
        ]
        indexes = [
            # An annotator's annotations with their items, from the index alone: what the labeling page counts as
            # done (annotate.selectors.progress_for_annotator) on every load.
            models.Index(fields=["annotator", "item"], name="annotation_by_annotator"),
        ]

    def __str__(self) -> str:
        preference = "no preference" if self.strength is None else f"{self.strength:+d}"
        return f"{self.annotator} on {self.item}: {preference}"
