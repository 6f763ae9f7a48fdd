"""Reward-model training: runs on a frozen dataset version, the models they register, and their item scores.

Progress lives in these rows (step, loss, history, heartbeat), written by the worker and polled by the pages;
Celery stores no results.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotate.models import Item, JobStatus, Project
from curation.models import DatasetVersion
from training.ml.selection import STRATEGY_LABELS

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
    # What the worker is doing before and between steps (loading the model, tokenising N pairs, evaluating).
    phase = models.CharField(max_length=200, blank=True)
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


class ScoringChunk(models.Model):
    """A contiguous range of a scoring job's items (in id order), scored by whichever gpu worker takes its task
    (training.services.scoring.scoring_chunk_run); the job is done when its last open chunk is. A job with no
    chunks (older rows, or nothing to score) is scored whole by training.tasks.scoring_task."""

    Status = JobStatus

    job = models.ForeignKey(ScoringJob, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    number = models.PositiveIntegerField(help_text="Its place in the job, from 1.")
    # The job's items with first_item_id <= id <= last_item_id (items_to_score's rule applies within the range).
    first_item_id = models.BigIntegerField()
    last_item_id = models.BigIntegerField()
    size = models.PositiveIntegerField(help_text="Items in the range when the job was created.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # "pid@host" of the worker process that claimed it last, for the pages and the logs.
    worker = models.CharField(max_length=200, blank=True)
    # As on ScoringJob: with the chunk's lock (concord.locks.SCORING_CHUNK), how the watchdog tells a lost worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(default=0, help_text="Times a lost worker's chunk was sent again.")
    recovered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="scoring_chunk_unique_number")]
        indexes = [
            # The watchdog's scan and a job's "any chunk still open?": only open chunks, a few at any time.
            models.Index(
                fields=["status", "job"], name="scoring_chunk_open", condition=Q(status__in=["queued", "running"])
            )
        ]

    def __str__(self) -> str:
        return f"Chunk {self.number} of scoring job {self.job_id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


class Campaign(models.Model):
    """Human-AI synergy curation of a project (training.services.campaigns): rounds in which a reward-model
    ensemble trained on the human-verified pairs decides the unverified ones and routes what it cannot decide to
    the humans, each round ending in a frozen dataset version. Settings: training.ml.synergy.CampaignSettings."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        STOPPED = "stopped", "Stopped by a curator"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    config = models.JSONField(default=dict, help_text="training.ml.synergy.CampaignSettings.to_dict()")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    stop_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=Q(status="running"), name="campaign_one_running")
        ]

    def __str__(self) -> str:
        return f"Campaign {self.name} ({self.status})"


class CampaignRound(models.Model):
    """One round of a campaign. Its stages run in order, each on a gpu worker (training.tasks.campaign_round_task)
    or as a job of its own that the round waits for; `stage` says where it is, so a round whose worker died
    resumes at the stage it was in."""

    class Stage(models.TextChoices):
        TRAIN = "train", "Training the ensemble"
        SCORE = "score", "Scoring the pool"
        DECIDE = "decide", "Deciding"
        RETRIEVE = "retrieve", "Retrieving neighbours of gold errors"
        LABEL = "label", "Humans labelling routed pairs"
        FREEZE = "freeze", "Freezing the curated version"
        DONE = "done", "Done"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting"  # for its training run, its scoring job, or the humans
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.TRAIN)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    message = models.CharField(max_length=500, blank=True, help_text="What the round is doing now.")
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    # What it trained on (the previous round's version, or the gold seed), what it trained, what it froze.
    training_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="campaign_rounds_trained"
    )
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="campaign_rounds"
    )
    scoring_job = models.ForeignKey(
        ScoringJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="campaign_rounds"
    )
    version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="campaign_rounds"
    )
    # The ensemble's temperature (fitted on held-out gold) and accuracy on the held-out gold pairs.
    temperature = models.FloatField(null=True, blank=True)
    gold_accuracy = models.FloatField(null=True, blank=True)
    gold_pairs = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Pairs per decision, per pool.")
    routed = models.PositiveIntegerField(default=0)
    routed_labelled = models.PositiveIntegerField(default=0)
    histogram = models.JSONField(default=list, blank=True, help_text="Strength histogram by decision.")
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(default=0)
    recovered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "number"]
        constraints = [models.UniqueConstraint(fields=["campaign", "number"], name="campaign_round_unique_number")]

    def __str__(self) -> str:
        return f"Round {self.number} of {self.campaign}"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


class PairDecision(models.Model):
    """What a round decided about one silver or unlabelled pair (training.ml.synergy.Decision), with the
    ensemble's view of it; a curator's override (DecisionOverride, latest wins) is copied into `override`."""

    round = models.ForeignKey(CampaignRound, on_delete=models.CASCADE, related_name="decisions")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="campaign_decisions")
    pool = models.CharField(max_length=16)  # annotate.rules.Pool: silver or unlabelled
    label_sign = models.SmallIntegerField(help_text="The silver label's side: -1 A, +1 B; 0 unlabelled.")
    decision = models.CharField(max_length=16)
    override = models.CharField(max_length=16, blank=True)
    # The ensemble: mean and spread of its members' strengths towards the label (towards B when unlabelled), and
    # its calibrated probability that the label (B, when unlabelled) is right.
    strength = models.FloatField()
    spread = models.FloatField()
    p_agree = models.FloatField()
    # Other voters' p_agree by name (LLM judges...), for Skywork's rule; empty with the ensemble alone.
    votes = models.JSONField(default=dict, blank=True)
    routed = models.BooleanField(default=False)
    priority = models.PositiveIntegerField(default=0)
    retrieved_by = models.BigIntegerField(null=True, blank=True, help_text="The gold item whose error pulled it.")
    # Annotations routing added to the item's overlap (its imported labels filled it), taken back when un-routed.
    overlap_added = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "item"], name="pair_decision_unique_item")]
        indexes = [
            models.Index(fields=["round", "decision"], name="pair_decision_by_decision"),
            # The decision list pages through a round by strength.
            models.Index(fields=["round", "strength", "id"], name="pair_decision_by_strength"),
            # The decision list's filter by a curator's decision: overrides are few.
            models.Index(fields=["round", "override"], name="pair_decision_overridden", condition=~Q(override="")),
            models.Index(fields=["round", "routed"], name="pair_decision_routed", condition=Q(routed=True)),
        ]

    def __str__(self) -> str:
        return f"{self.decision} on {self.item_id} in {self.round}"

    @property
    def effective(self) -> str:
        return self.override or self.decision


class DecisionOverride(models.Model):
    """A curator overriding a round's decision on a pair: kept with who and why, never edited."""

    pair_decision = models.ForeignKey(PairDecision, on_delete=models.CASCADE, related_name="overrides")
    curator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=16)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.decision} by {self.curator} on {self.pair_decision}"


class SelectionPolicy(models.Model):
    """How a project's queue picks what humans label next: a strategy of training.ml.selection, or none (the queue's
    own order, least annotated first). A selection job ranks the unlabelled pool under it (Item.selection_rank)."""

    QUEUE_ORDER = ""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="selection_policy")
    strategy = models.CharField(
        max_length=32, blank=True, choices=[("", "Queue order (least annotated first)"), *STRATEGY_LABELS.items()]
    )
    batch_size = models.PositiveIntegerField(default=500, help_text="Items ranked by each selection.")
    random_share = models.FloatField(default=0.1, help_text="Share of each batch drawn at random.")
    pool_limit = models.PositiveIntegerField(default=100_000, help_text="Unlabelled items scored per selection.")
    every_labels = models.PositiveIntegerField(default=0, help_text="Select again after this many new labels; 0: no.")
    after_promotion = models.BooleanField(default=True, help_text="Select again when a model is promoted.")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Selection policy of project {self.project_id}: {self.strategy or 'queue order'}"


class SelectionRun(models.Model):
    """One selection: the pool scored with the project's active model and ranked by a strategy, by a worker with
    its progress here. Its settings are the policy's when it was asked for."""

    Status = JobStatus

    class Reason(models.TextChoices):
        MANUAL = "manual", "asked for by an admin"
        PROMOTION = "promotion", "a model was promoted"
        LABELS = "labels", "new labels came in"
        POLICY = "policy", "the strategy changed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="selection_runs")
    strategy = models.CharField(max_length=32)
    batch_size = models.PositiveIntegerField()
    random_share = models.FloatField()
    pool_limit = models.PositiveIntegerField()
    reward_model = models.ForeignKey(
        RewardModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="selection_runs"
    )
    reason = models.CharField(max_length=16, choices=Reason.choices, default=Reason.MANUAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    message = models.CharField(max_length=300, blank=True, help_text="What the job is doing now.")
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    pool = models.PositiveIntegerField(default=0, help_text="Unlabelled items the strategy chose from.")
    picked = models.PositiveIntegerField(default=0, help_text="Items given a rank.")
    labels_at_start = models.PositiveIntegerField(default=0, help_text="The project's human labels when it ran.")
    # Asked for again while it ran (another strategy, settings or model): a new selection follows it.
    rerun_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(default=0, help_text="Times a lost worker's job was sent again.")
    recovered_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One selection at a time per project: a second ask while one waits or runs gets that one.
            models.UniqueConstraint(
                fields=["project"], condition=Q(status__in=["queued", "running"]), name="selection_run_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"Selection run {self.pk} ({self.strategy}, {self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
