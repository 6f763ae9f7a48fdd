"""Reward-model training: runs on a frozen dataset version, the models they register, and their item scores.

Progress lives in these rows (step, loss, history, heartbeat), written by the worker and polled by the pages;
Celery stores no results.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotate.models import Item, JobStatus, Project
from curation.models import DatasetVersion

HISTORY_MAX_POINTS = 2000
LOG_MAX_CHARS = 20_000


class TrainingRun(models.Model):
    """One training job: a config, a frozen version, and the state a worker reports as it trains."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="training_runs")
    config = models.JSONField(default=dict, help_text="training.ml.config.TrainConfig.to_dict()")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0)
    loss = models.FloatField(null=True, blank=True)
    eval_accuracy = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # [{"step", "loss", "eval_accuracy"}...], at most HISTORY_MAX_POINTS (thinned as it grows).
    history = models.JSONField(default=list, blank=True)
    log = models.TextField(blank=True, help_text=f"The last {LOG_MAX_CHARS} characters.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Set by training.services.recovery each time it sends the task of a run whose worker died again.
    recoveries = models.PositiveIntegerField(default=0, help_text="Times a lost worker's run was sent again.")
    recovered_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    output_dir = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="training_run_project")]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED)


class RewardModel(models.Model):
    """A trained model registered by a successful run; at most one per project is active (used for scoring)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_models")
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="reward_model")
    path = models.CharField(max_length=500)
    # {"dataset_version": {"id", "name", "content_hash"}, "config", "metrics", "code_version", "created"}
    model_card = models.JSONField(default=dict)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=Q(is_active=True), name="reward_model_one_active")
        ]

    def __str__(self) -> str:
        return f"Reward model {self.pk} of run {self.run_id}"


class ItemScore(models.Model):
    """A reward model's scores of an item's two responses; margin = reward_b - reward_a (positive prefers B)."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="model_scores")
    reward_model = models.ForeignKey(RewardModel, on_delete=models.CASCADE, related_name="scores")
    reward_a = models.FloatField()
    reward_b = models.FloatField()
    margin = models.FloatField()
    # The model's calibrated probability that B is preferred: sigmoid(margin / T), with the temperature T fitted on
    # its run's validation split (model_card metrics.heldout.calibration); T = 1 for a model without one.
    probability_b = models.FloatField(null=True, blank=True)
    ensemble_mean = models.FloatField(null=True, blank=True)
    ensemble_std = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reward_model", "item"], name="item_score_unique_model_item"),
        ]

    def __str__(self) -> str:
        return f"Score of {self.item_id} by model {self.reward_model_id}"


class ScoringJob(models.Model):
    """Scoring the items of a project (or of one of its frozen versions) with a reward model, run by a worker with
    its progress here."""

    Status = JobStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="scoring_jobs")
    reward_model = models.ForeignKey(RewardModel, on_delete=models.CASCADE, related_name="scoring_jobs")
    # Score only the project's items in this frozen version; none: every item of the project.
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="scoring_jobs"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # When a worker claimed the job (and its progress writes, if any): with the job lock, how
    # training.services.recovery tells a lost worker's job from a live one.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(default=0, help_text="Times a lost worker's job was sent again.")
    recovered_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Scoring job {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
