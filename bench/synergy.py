"""Human-AI synergy curation (Skywork-Reward-V2; Secrets of RLHF II) on real preference data with 25% of the
silver labels flipped: how well Concord's rules (training.ml.synergy) find the flips, how much of the accuracy a
reward model loses to the noise they win back, and how they compare at equal human budget with random routing,
Secrets of RLHF II's flip-the-lowest-20% rule and cleanlab's find_label_issues. No Django: the files are read with
annotate.formats. Writes a section of docs/benchmarks.md and docs/img/synergy.svg.

Concord's method uses the rules as the campaign's worker does: `synergy.retrieval_budget` splits a round's human
budget between neighbours of gold errors and the most uncertain pairs, and `synergy.kept_label` decides what row
each silver pair gives the curated data (b), with weight = its confidence (the test models' Bradley-Terry loss
honours per-row weights). One campaign gives (b) under both `uncertain_action` values: keep (the default) and
leave_out.

    .venv/bin/python bench/synergy.py            # the full run (about 30 minutes on 2 shared CPU cores)
    .venv/bin/python bench/synergy.py --quick    # a smoke run: 300 pairs a file, 2 rounds, 2 epochs

Every split is by prompt and seeded: gold 20% (humans verified it; a share held out to fit the ensemble's
temperature and choose checkpoints), silver 60% (labels flipped at random, exactly 25%), test 20%. Humans are
simulated: a pair routed to them gets the file's own label. Models default to the "cached" mode, made to fit a
2-core CPU: the default backbone runs once over every text, frozen, and each model (ensemble member, cross-fitted
cleanlab fold, test model) trains only a head on the cached token states; test models are trained a second time
with the top transformer layer trained too (`--strong-layers`), to show what the head-only trade costs.
`--mode full` instead fine-tunes whole models with Concord's own trainer (training.ml.trainer.train), for a GPU
and a larger `--backbone`.
"""

import argparse
import copy
import dataclasses
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from annotate.formats import open_reader, parse_records
from annotate.formats.core import PairRecord, PreferenceRecord
from bench.common import ROOT, machine, write_section
from training.ml import synergy
from training.ml.config import TrainConfig, default_backbone
from training.ml.data import PairExample, encode
from training.ml.evaluate import fit_temperature
from training.ml.losses import bradley_terry
from training.ml.retrieval import PairEncoder, PairIndex, pair_text, retrieve
from training.ml.synergy import CampaignSettings, Decision, Vote

SECTION = "Human-AI synergy curation against 25% flipped labels"
SVG = ROOT / "docs" / "img" / "synergy.svg"
HH_FILE = "hh-rlhf/harmless-base/test.jsonl.gz"
PANDALM_FILE = "pandalm-testset/testset-v1.json"
LOG = print


# ---------------------------------------------------------------- data


@dataclass
class Dataset:
    """Pairs as parallel lists; sign +1 when B is preferred (training.ml.synergy's convention)."""

    name: str
    prompts: list[list[dict[str, str]]]
    a: list[str]
    b: list[str]
    truth: np.ndarray  # the file's label
    gold: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gold_fit: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gold_holdout: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    silver: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    test: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    noisy: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # silver labels
    flipped: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=bool))  # per pair

    def __len__(self) -> int:
        return len(self.truth)


def load_hh(path: Path, seed: int) -> Dataset:
    """HH-RLHF pairs; chosen goes to A or B by a seeded coin, so that the label's sign carries no position."""
    with path.open("rb") as raw:
        records = [r for r in parse_records(open_reader(raw, format="hh-rlhf"), format="hh-rlhf")]
    rng = random.Random(seed)
    prompts, a, b, signs = [], [], [], []
    for r in records:
        if not isinstance(r, PreferenceRecord):
            continue
        sign = rng.choice((-1, 1))
        prompts.append(list(r.prompt))
        a.append(r.rejected if sign > 0 else r.chosen)
        b.append(r.chosen if sign > 0 else r.rejected)
        signs.append(sign)
    return Dataset("HH-RLHF harmless-base", prompts, a, b, np.array(signs, dtype=np.int64))


def load_pandalm(path: Path) -> Dataset:
    """PandaLM pairs whose three annotators have a majority (parse_pandalm's label); ties are skipped."""
    with path.open("rb") as raw:
        records = list(parse_records(open_reader(raw, format="pandalm"), format="pandalm"))
    kept = [r for r in records if isinstance(r, PairRecord) and r.label in (-1, 1)]
    return Dataset(
        "PandaLM test set",
        [list(r.prompt) for r in kept],
        [r.response_a for r in kept],
        [r.response_b for r in kept],
        np.array([r.label for r in kept], dtype=np.int64),
    )


def subset(data: Dataset, count: int, seed: int) -> Dataset:
    keep = sorted(random.Random(seed).sample(range(len(data)), min(count, len(data))))
    return Dataset(
        data.name,
        [data.prompts[i] for i in keep],
        [data.a[i] for i in keep],
        [data.b[i] for i in keep],
        data.truth[keep],
    )


def split(data: Dataset, *, seed: int, noise: float, gold_holdout: float) -> None:
    """Gold 20% / silver 60% / test 20% by prompt (no prompt in two parts), gold's held-out share by prompt too,
    and exactly round(noise * silver) silver labels flipped."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(data.prompts):
        groups.setdefault(json.dumps(prompt, sort_keys=True), []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    parts: list[list[int]] = [[], [], []]
    wanted = [0.2 * len(data), 0.2 * len(data)]
    for key in keys:
        part = 0 if len(parts[0]) < wanted[0] else 1 if len(parts[1]) < wanted[1] else 2
        parts[part].extend(groups[key])
    gold, test, silver = (np.array(sorted(p), dtype=np.int64) for p in parts)
    gold_keys = sorted({json.dumps(data.prompts[i], sort_keys=True) for i in gold})
    random.Random(seed + 1).shuffle(gold_keys)
    held: list[int] = []
    for key in gold_keys:
        if len(held) < gold_holdout * len(gold):
            held.extend(groups[key])
    data.gold, data.silver, data.test = gold, silver, test
    data.gold_holdout = np.array(sorted(held), dtype=np.int64)
    data.gold_fit = np.setdiff1d(gold, data.gold_holdout)
    data.noisy = data.truth.copy()
    rng = np.random.default_rng(seed + 2)
    flips = rng.choice(silver, size=round(noise * len(silver)), replace=False)
    data.noisy[flips] *= -1
    data.flipped = data.noisy != data.truth


# ---------------------------------------------------------------- models


@dataclass
class ModelSettings:
    mode: str  # cached | full
    backbone: str
    max_length: int
    epochs: int
    batch_size: int
    learning_rate: float
    trainable_layers: int
    min_steps: int = 0
    strong_layers: int = 0
    strong_epochs: int = 1


class CachedBackbone:
    """The backbone's lower layers run once, frozen, over every (prompt, response) text of a data set; models
    train the top `trainable_layers` transformer layers (copied from the backbone) and a linear head on mean-pooled
    token states, fed from the cache. Members share the frozen part, so a member costs its top layers only."""

    def __init__(self, data: Dataset, settings: ModelSettings) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings
        tokenizer = AutoTokenizer.from_pretrained(settings.backbone)
        model = AutoModel.from_pretrained(settings.backbone, use_safetensors=True, attn_implementation="eager")
        model.eval()
        layers = model.encoder.layer
        frozen = len(layers) - settings.trainable_layers
        self.top = torch.nn.ModuleList([copy.deepcopy(layer) for layer in layers[frozen:]])  # empty: head only
        self.hidden = int(model.config.hidden_size)
        texts = [(p, r) for p, a, b in zip(data.prompts, data.a, data.b, strict=True) for r in (a, b)]
        ids = [encode(tokenizer, p, r, settings.max_length) for p, r in texts]  # sequence 2i: A of pair i, 2i+1: B
        # One padded float32 block (texts, max_length, hidden): a batch is a slice of it, no per-text copying.
        self.states = torch.zeros(len(ids), settings.max_length, self.hidden)
        self.lengths = np.zeros(len(ids), dtype=np.int64)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]["input_ids"]))
        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(order), 64):
                chunk = order[start : start + 64]
                batch = tokenizer.pad([ids[i] for i in chunk], padding="longest", return_tensors="pt")
                hidden = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
                mask = _additive_mask(batch["attention_mask"])
                for layer in layers[:frozen]:
                    hidden = layer(hidden, mask)
                width = hidden.shape[1]
                self.states[chunk, :width] = hidden * batch["attention_mask"].unsqueeze(-1)
                self.lengths[chunk] = batch["attention_mask"].sum(1).numpy()
        LOG(
            f"  cached {len(ids)} texts through {frozen} frozen layers in {time.perf_counter() - started:.0f} s "
            f"(mean {self.lengths.mean():.0f} tokens, {100 * (self.lengths >= settings.max_length).mean():.0f}% cut)"
        )

    def through_top(self, settings: ModelSettings) -> "CachedBackbone":
        """The same texts one step further: the cached states run through the (frozen) top layers, for models
        that train a head only. Caching the lower layers once serves both kinds of model."""
        other = copy.copy(self)
        other.settings, other.top, other.states = settings, torch.nn.ModuleList(), torch.zeros_like(self.states)
        order = np.argsort(-self.lengths, kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), 64):
                chunk = order[start : start + 64].tolist()
                hidden, attention = self._batch(chunk)
                for layer in self.top:
                    hidden = layer(hidden, _additive_mask(attention))
                other.states[chunk, : hidden.shape[1]] = hidden * attention.unsqueeze(-1)
        return other

    def _batch(self, sequences: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(np.asarray(sequences, dtype=np.int64))
        longest = int(self.lengths[sequences].max())
        hidden = self.states[index, :longest]
        lengths = torch.as_tensor(self.lengths[sequences])
        attention = (torch.arange(longest)[None, :] < lengths[:, None]).float()
        return hidden, attention

    def new_model(self, seed: int) -> "TopModel":
        torch.manual_seed(seed)
        return TopModel(copy.deepcopy(self.top) if len(self.top) else torch.nn.ModuleList(), self.hidden)

    def rewards(self, model: "TopModel", sequences: Sequence[int]) -> np.ndarray:
        model.eval()
        out = np.zeros(len(sequences), dtype=np.float64)
        order = sorted(range(len(sequences)), key=lambda k: -self.lengths[sequences[k]])
        with torch.inference_mode():
            for start in range(0, len(order), 128):
                chunk = order[start : start + 128]
                hidden, attention = self._batch([sequences[k] for k in chunk])
                out[chunk] = model(hidden, attention).numpy()
        return out

    def margins(self, model: "TopModel", pairs: np.ndarray) -> np.ndarray:
        """r_B - r_A of each pair."""
        rewards = self.rewards(model, [s for i in pairs for s in (2 * int(i), 2 * int(i) + 1)])
        return rewards[1::2] - rewards[0::2]

    def train_one(
        self,
        pairs: np.ndarray,
        signs: np.ndarray,
        holdout: np.ndarray,
        holdout_signs: np.ndarray,
        seed: int,
        weights: np.ndarray | None = None,
    ) -> tuple["TopModel", list[float]]:
        """One model trained with Bradley-Terry on (pair, label sign), each pair's loss scaled by its row weight
        (none: all 1, the plain mean), seeded; after each epoch its accuracy on the held-out gold pairs, and the
        best epoch's weights kept (checkpoint by eval accuracy)."""
        s = self.settings
        model = self.new_model(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=0.01)
        # At least min_steps optimizer steps: small sets (round 1's gold) get more epochs, large ones s.epochs.
        epochs = max(s.epochs, math.ceil(s.min_steps / math.ceil(len(pairs) / s.batch_size)))
        steps = epochs * math.ceil(len(pairs) / s.batch_size)
        from training.ml.trainer import linear_schedule

        schedule = linear_schedule(optimizer, warmup=max(1, steps // 10), total=steps)
        rng = random.Random(seed)
        lengths = [max(self.lengths[2 * i], self.lengths[2 * i + 1]) for i in pairs]
        from training.ml.data import length_grouped_batches

        best, best_state, history = -1.0, None, []
        started = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for batch in length_grouped_batches(lengths, batch_size=s.batch_size, seed=rng.randrange(1 << 30)):
                chosen = [2 * int(pairs[k]) + (1 if signs[k] > 0 else 0) for k in batch]
                rejected = [2 * int(pairs[k]) + (0 if signs[k] > 0 else 1) for k in batch]
                hidden, attention = self._batch(chosen + rejected)
                rewards = model(hidden, attention)
                weight = None if weights is None else torch.as_tensor(weights[batch], dtype=rewards.dtype)
                loss = bradley_terry(rewards[: len(batch)], rewards[len(batch) :], weight)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            accuracy = float((self.margins(model, holdout) * holdout_signs > 1e-6).mean()) if len(holdout) else 0.0
            history.append(accuracy)
            if accuracy > best:
                best, best_state = accuracy, copy.deepcopy(model.state_dict())
        LOG(
            f"    {len(pairs)} pairs x {epochs} epochs in {time.perf_counter() - started:.1f} s; held-out gold "
            f"accuracy by epoch {' '.join(f'{a:.2f}' for a in history)}"
        )
        if best_state is not None:
            model.load_state_dict(best_state)
        return model, history


class TopModel(torch.nn.Module):
    """The trained part of a cached-mode model. With top layers: those layers, mean pooling and a linear head.
    Without (trainable_layers 0, the default): a head on the frozen backbone's last token states, a per-token MLP
    (hidden -> 128, GELU) pooled two ways (attention weights learnt per token, and the mean) into a linear reward,
    richer than a logistic head on the mean-pooled sentence embedding."""

    def __init__(self, layers: torch.nn.ModuleList, hidden: int, width: int = 128) -> None:
        super().__init__()
        self.layers = layers
        self.token: torch.nn.Module | None = None
        if len(layers):
            self.head = torch.nn.Linear(hidden, 1)
        else:
            self.token = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(hidden, width), torch.nn.GELU())
            self.attention = torch.nn.Linear(width, 1)
            self.head = torch.nn.Linear(2 * width, 1)
        torch.nn.init.normal_(self.head.weight, std=0.02)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        mask = attention.unsqueeze(-1)
        mean_of = lambda x: (x * mask).sum(1) / mask.sum(1).clamp_min(1)  # noqa: E731
        if self.token is None:
            additive = _additive_mask(attention)
            for layer in self.layers:
                hidden = layer(hidden, additive)
            return self.head(mean_of(hidden)).squeeze(-1)
        features = self.token(hidden)
        logits = self.attention(features).squeeze(-1).masked_fill(attention == 0, -1e9)
        weights = torch.softmax(logits, dim=1).unsqueeze(-1)
        pooled = torch.cat([(features * weights).sum(1), mean_of(features)], dim=-1)
        return self.head(pooled).squeeze(-1)


def _additive_mask(attention: torch.Tensor) -> torch.Tensor:
    return (1.0 - attention[:, None, None, :].float()) * torch.finfo(torch.float32).min


class Models:
    """Trains models on (pair, sign) lists and returns r_B - r_A on asked pairs, in either mode."""

    def __init__(self, data: Dataset, settings: ModelSettings, campaign: CampaignSettings) -> None:
        self.data, self.settings, self.campaign = data, settings, campaign
        self.cached: CachedBackbone | None = None
        self.strong: CachedBackbone | None = None  # test models with the top layer trained too
        if settings.mode == "cached" and settings.trainable_layers == 0 and settings.strong_layers > 0:
            strong = dataclasses.replace(
                settings,
                trainable_layers=settings.strong_layers,
                learning_rate=1e-4,
                epochs=settings.strong_epochs,
                min_steps=0,
            )
            self.strong = CachedBackbone(data, strong)
            self.cached = self.strong.through_top(settings)
        elif settings.mode == "cached":
            self.cached = CachedBackbone(data, settings)
        self.seconds = 0.0
        self.strong_seconds = 0.0
        self.pairs_trained = 0

    def ensemble(
        self,
        pairs: np.ndarray,
        signs: np.ndarray,
        score: np.ndarray,
        *,
        members: int,
        seed: int,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """(members, len(score)) margins of an ensemble trained on the pairs (weights: each row's weight in the
        loss; none: all 1): "seeds" members see every pair (own head initialisation and order), "bootstrap"
        members each a resample of them."""
        started = time.perf_counter()
        holdout = self.data.gold_holdout
        rows = []
        if self.cached is None:
            rows = self._full(pairs, signs, score, members=members, seed=seed, weights=weights)
        else:
            for member in range(members):
                chosen = np.arange(len(pairs))
                if self.campaign.ensemble_kind == "bootstrap":
                    chosen = np.random.default_rng(seed + member).integers(0, len(pairs), len(pairs))
                model, _ = self.cached.train_one(
                    pairs[chosen],
                    signs[chosen],
                    holdout,
                    self.data.truth[holdout],
                    seed + member,
                    None if weights is None else weights[chosen],
                )
                rows.append(self.cached.margins(model, score))
                self.pairs_trained += len(pairs) * self.settings.epochs
        self.seconds += time.perf_counter() - started
        return np.stack(rows)

    def _full(
        self,
        pairs: np.ndarray,
        signs: np.ndarray,
        score: np.ndarray,
        *,
        members: int,
        seed: int,
        weights: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Concord's trainer: whole models fine-tuned, saved, then scored (select_best and ensemble_kind when this
        checkout's TrainConfig has them)."""
        from training.ml.scoring import member_outputs
        from training.ml.trainer import train

        s, d = self.settings, self.data
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        extra: dict[str, object] = {}
        if "select_best" in known:
            extra["select_best"] = True
        if "ensemble_kind" in known and members > 1:
            extra["ensemble_kind"] = self.campaign.ensemble_kind
        config = TrainConfig(
            backbone=s.backbone,
            objective="bt",
            epochs=s.epochs,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            max_length=s.max_length,
            ensemble_size=members,
            seed=seed,
            checkpoint_every=1_000_000,
            **extra,  # type: ignore[arg-type]
        )
        row_weights = np.ones(len(pairs)) if weights is None else weights
        examples = [
            self._example(int(i), int(sign), float(w)) for i, sign, w in zip(pairs, signs, row_weights, strict=True)
        ]
        holdout = [self._example(int(i), int(d.truth[i])) for i in d.gold_holdout]
        with tempfile.TemporaryDirectory() as folder:
            result = train(config, examples, holdout, output_dir=Path(folder))
            assert result.model_dir is not None
            items = [(d.prompts[i], d.a[i]) for i in score] + [(d.prompts[i], d.b[i]) for i in score]
            outputs = member_outputs(result.model_dir, items, max_length=s.max_length)[:, :, 0]
        self.pairs_trained += len(pairs) * s.epochs * members
        n = len(score)
        return list(outputs[:, n:] - outputs[:, :n])

    def _example(self, i: int, sign: int, weight: float = 1.0) -> PairExample:
        """A training pair as the campaign's version row gives it: weight = the row's confidence, margin =
        ai_margin(confidence) (read only by a margin objective; this bench trains plain Bradley-Terry)."""
        d = self.data
        chosen, rejected = (d.b[i], d.a[i]) if sign > 0 else (d.a[i], d.b[i])
        margin = float(synergy.ai_margin(np.array(weight)))
        return PairExample(prompt=d.prompts[i], chosen=chosen, rejected=rejected, margin=margin, weight=weight)

    def test_accuracy(
        self,
        pairs: np.ndarray,
        signs: np.ndarray,
        *,
        seed: int,
        strong: bool = False,
        weights: np.ndarray | None = None,
    ) -> float:
        """Test accuracy of one model trained on the pairs with the shared settings (strong: the top layer
        trained too), each row weighted (all weights 1 train exactly as no weights: the plain mean)."""
        if weights is not None and np.all(weights == 1.0):
            weights = None
        if strong:
            assert self.strong is not None
            started = time.perf_counter()
            d = self.data
            model, _ = self.strong.train_one(pairs, signs, d.gold_holdout, d.truth[d.gold_holdout], seed, weights)
            margins = self.strong.margins(model, d.test)
            self.seconds += time.perf_counter() - started
            self.strong_seconds += time.perf_counter() - started
            return float((margins * d.truth[d.test] > 1e-6).mean())
        margins = self.ensemble(pairs, signs, self.data.test, members=1, seed=seed, weights=weights)[0]
        return float((margins * self.data.truth[self.data.test] > 1e-6).mean())


# ---------------------------------------------------------------- curation


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties half): the Mann-Whitney statistic."""
    from scipy.stats import rankdata

    positives = positives.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(decided: np.ndarray, flipped: np.ndarray) -> tuple[float, float]:
    """Of silver pairs marked (as contradicted): the share truly flipped; of truly flipped ones, the share marked."""
    hits = int((decided & flipped).sum())
    return (hits / decided.sum() if decided.sum() else float("nan")), hits / max(1, int(flipped.sum()))


@dataclass
class RoundReport:
    round: int
    trained_on: int
    temperature: float
    gold_holdout_accuracy: float
    auroc: float  # on silver pairs the ensemble did not train on
    auroc_pairs: int
    spread_auroc: float
    flip_precision: float  # cumulative, machine flips only
    flip_recall: float
    accepted: float  # shares of silver, cumulative
    flipped: float
    dropped: float
    routed: float
    routed_flipped: float  # share of routed pairs whose silver label was wrong (humans corrected them)
    retrieved: int
    uncertain_left: float
    label_error: float  # share of kept silver rows (accepted, flipped, answered) whose label is wrong


@dataclass
class ArmResult:
    name: str
    rounds: list[RoundReport]
    rows: tuple[np.ndarray, np.ndarray]  # the curated silver rows: (pairs, signs)
    test: float = float("nan")
    routed_total: int = 0


class Campaign:
    """A synergy campaign on one data set: rounds of ensemble, decide_silver, routing and human answers."""

    def __init__(
        self,
        data: Dataset,
        models: Models,
        settings: CampaignSettings,
        vectors: PairIndex | None,
        *,
        routing: str,
        seed: int,
    ) -> None:
        self.data, self.models, self.settings, self.index = data, models, settings, vectors
        self.routing, self.seed = routing, seed
        n = len(data)
        self.state = np.full(n, "", dtype=object)  # silver: "" undecided, accept, flip, drop, human
        self.label = data.noisy.copy()  # the label a silver row carries now
        # p_agree (towards the silver label) of the round that accepted or flipped a pair, and of the latest round
        # for every silver pair: what kept_label turns into a row's side and weight.
        self.p_decided = np.full(n, np.nan)
        self.p_latest = np.full(n, np.nan)
        self.spent = 0
        self.reports: list[RoundReport] = []
        self.first_margins: np.ndarray | None = None  # round 1's ensemble on every silver pair

    def training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """What the round's ensemble trains on: gold (its fitting part), human-answered silver and silver accepted
        so far (with the label it carries)."""
        d = self.data
        keep = d.silver[np.isin(self.state[d.silver], ["human", Decision.ACCEPT.value])]
        pairs = np.concatenate([d.gold_fit, keep])
        return pairs, self.label[pairs]

    def curated_rows(
        self, settings: CampaignSettings, *, flips_dropped: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Concord's curated silver after the last round, as the worker's version rows give it (_decision_row):
        a human-answered pair its human label with weight 1 (a gold row); every other pair what
        `synergy.kept_label` makes of its decision (accepted and flipped: the deciding round's p_agree; still
        undecided: the last round's, as an uncertain decision), weight = that confidence. Returns (pairs, signs,
        weights, composition)."""
        d = self.data
        rows: list[tuple[int, int, float, str]] = []  # (pair, sign, weight, source)
        for i in d.silver:
            state = str(self.state[i])
            if state == "human":
                rows.append((int(i), int(d.truth[i]), 1.0, "human"))
                continue
            decision = state or Decision.UNCERTAIN.value
            if flips_dropped and decision == Decision.FLIP.value:
                decision = Decision.DROP.value
            p = self.p_decided[i] if state else self.p_latest[i]
            kept = synergy.kept_label(decision, int(d.noisy[i]), float(p), settings)
            if kept is not None:
                rows.append((int(i), kept[0], float(kept[1]), decision))
        pairs = np.array([r[0] for r in rows], dtype=np.int64)
        signs = np.array([r[1] for r in rows], dtype=np.int64)
        weights = np.array([r[2] for r in rows], dtype=np.float64)
        sources = np.array([r[3] for r in rows], dtype=object)
        return pairs, signs, weights, composition(d, pairs, signs, weights, sources)

    def run_round(self, number: int, margins: np.ndarray | None = None) -> np.ndarray:
        d, s = self.data, self.settings
        pairs, signs = self.training_rows()
        scored = np.concatenate([d.gold, d.silver])
        if margins is None:
            LOG(f"  round {number} ({self.routing} routing): ensemble of {s.ensemble_size} on {len(pairs)} pairs")
            margins = self.models.ensemble(pairs, signs, scored, members=s.ensemble_size, seed=self.seed + 100 * number)
        by_pair = {int(p): k for k, p in enumerate(scored)}
        column = np.array([by_pair[int(i)] for i in d.silver])
        gold_column = np.array([by_pair[int(i)] for i in d.gold])
        holdout_column = np.array([by_pair[int(i)] for i in d.gold_holdout])
        # Temperature on held-out gold, as the app fits it.
        holdout_mean, _ = synergy.strengths(margins[:, holdout_column], d.truth[d.gold_holdout])
        temperature = fit_temperature(holdout_mean)
        holdout_accuracy = float((holdout_mean > 1e-6).mean())
        mean, spread = synergy.strengths(margins[:, column], self.label[d.silver])
        if number == 1:
            self.first_margins = margins[:, column]
        p_agree = synergy.probability(mean, temperature)
        undecided = self.state[d.silver] == ""
        # Flip detection, scored on the silver pairs this ensemble did not train on (round 1: all of them):
        # a low strength towards the silver label should mean a flipped one.
        unseen = ~np.isin(d.silver, pairs)
        report_auroc = auroc(-mean[unseen], d.flipped[d.silver][unseen])
        spread_auroc = auroc(spread[unseen], d.flipped[d.silver][unseen])
        decisions = synergy.decide_silver(Vote("ensemble", p_agree), spread, s)
        budget = synergy.round_budget(s, spent=self.spent)
        routed, retrieved = self._route(
            number, decisions, undecided, p_agree, margins[:, gold_column], temperature, budget
        )
        self.spent += len(routed)
        routed_set = set(int(i) for i in routed)
        self.p_latest[d.silver] = p_agree
        for k, i in enumerate(d.silver):
            if not undecided[k]:
                continue
            if int(i) in routed_set:
                self.state[i], self.label[i] = "human", d.truth[i]
            elif decisions[k] == Decision.ACCEPT.value:
                self.state[i], self.p_decided[i] = Decision.ACCEPT.value, p_agree[k]
            elif decisions[k] in (Decision.FLIP.value, Decision.DROP.value):
                self.state[i], self.p_decided[i] = decisions[k], p_agree[k]
                if decisions[k] == Decision.FLIP.value:
                    self.label[i] = -d.noisy[i]
        states = self.state[d.silver]
        flipped = d.flipped[d.silver]
        contradicted = np.isin(states, [Decision.FLIP.value, Decision.DROP.value])
        precision, recall = precision_recall(contradicted, flipped)
        kept = np.isin(states, ["human", Decision.ACCEPT.value, Decision.FLIP.value])
        routed_now = np.isin(d.silver, routed)
        report = RoundReport(
            round=number,
            trained_on=len(pairs),
            temperature=temperature,
            gold_holdout_accuracy=holdout_accuracy,
            auroc=report_auroc,
            auroc_pairs=int(unseen.sum()),
            spread_auroc=spread_auroc,
            flip_precision=precision,
            flip_recall=recall,
            accepted=float((states == Decision.ACCEPT.value).mean()),
            flipped=float((states == Decision.FLIP.value).mean()),
            dropped=float((states == Decision.DROP.value).mean()),
            routed=float((states == "human").mean()),
            routed_flipped=float(flipped[routed_now].mean()) if routed_now.any() else float("nan"),
            retrieved=retrieved,
            uncertain_left=float((states == "").mean()),
            label_error=float((self.label[d.silver][kept] != d.truth[d.silver][kept]).mean()) if kept.any() else 0,
        )
        self.reports.append(report)
        LOG(f"  round {number} ({self.routing}): {_round_line(report)}")
        return margins

    def _route(
        self,
        number: int,
        decisions: np.ndarray,
        undecided: np.ndarray,
        p_agree: np.ndarray,
        gold_margins: np.ndarray,
        temperature: float,
        budget: int,
    ) -> tuple[np.ndarray, int]:
        """The silver pairs sent to humans this round. "concord": error-driven retrieval first (each gold pair the
        ensemble gets wrong or barely right pulls retrieval_k(p) nearest undecided pairs, worst gold pair first), up
        to `synergy.retrieval_budget` of the budget, then the most uncertain of this round's uncertain pairs (they
        also fill what retrieval leaves unused). "random": pairs drawn at random
        from this round's uncertain ones (topped up from the other undecided pairs)."""
        d, s = self.data, self.settings
        candidates = d.silver[undecided]
        uncertain = d.silver[undecided & (decisions == Decision.UNCERTAIN.value)]
        rng = np.random.default_rng(self.seed + 7 * number)
        if self.routing == "random":
            chosen = rng.permutation(uncertain)[:budget]
            if len(chosen) < budget:  # fewer uncertain pairs than the budget
                rest = rng.permutation(np.setdiff1d(candidates, chosen))
                chosen = np.concatenate([chosen, rest[: budget - len(chosen)]])
            return chosen, 0
        pulled: list[int] = []
        share = synergy.retrieval_budget(budget, s)
        if self.index is not None and share > 0:
            gold_mean, _ = synergy.strengths(gold_margins, d.truth[d.gold])
            p_gold = synergy.probability(gold_mean, temperature)
            ks = np.array([synergy.retrieval_k(float(p), s.retrieval_k) for p in p_gold])
            worst = np.argsort(p_gold, kind="stable")
            worst = worst[ks[worst] > 0]
            found = retrieve(self.index, d.gold[worst], ks[worst], candidates, budget=share)
            pulled = [item for item, _ in found]
        by_uncertainty = np.argsort(-synergy.uncertainty(p_agree), kind="stable")
        ordered = [int(d.silver[k]) for k in by_uncertainty if d.silver[k] in set(uncertain.tolist())]
        chosen = list(pulled)
        taken = set(chosen)
        for i in ordered:
            if len(chosen) >= budget:
                break
            if i not in taken:
                chosen.append(i)
                taken.add(i)
        return np.array(chosen, dtype=np.int64), len(pulled)


def _round_line(r: RoundReport) -> str:
    return (
        f"AUROC {r.auroc:.3f} (spread {r.spread_auroc:.3f}) on {r.auroc_pairs}, T {r.temperature:.2f}, gold-holdout "
        f"acc {r.gold_holdout_accuracy:.3f}; accepted {r.accepted:.2f} flipped {r.flipped:.2f} routed {r.routed:.2f} "
        f"(retrieved {r.retrieved}) undecided {r.uncertain_left:.2f}; flip P {r.flip_precision:.3f} R "
        f"{r.flip_recall:.3f}; label error of kept silver {r.label_error:.3f}"
    )


def composition(data: Dataset, pairs: np.ndarray, signs: np.ndarray, weights: np.ndarray, sources: np.ndarray) -> dict:
    """What a curated silver set holds: rows by where they come from (human, accept, flip, uncertain), the share
    of wrong labels (plain and weighted by the rows' weights), and the mean weight of right and of wrong rows."""
    wrong = signs != data.truth[pairs] if len(pairs) else np.zeros(0, dtype=bool)
    by_source = {str(k): int((sources == k).sum()) for k in ("human", "accept", "flip", "uncertain")}
    uncertain = sources == Decision.UNCERTAIN.value
    return {
        "rows": len(pairs),
        "by_source": by_source,
        "label_error": float(wrong.mean()) if len(pairs) else float("nan"),
        "weighted_label_error": float((weights * wrong).sum() / weights.sum()) if len(pairs) else float("nan"),
        "weight_sum": float(weights.sum()),
        "mean_weight_right": float(weights[~wrong].mean()) if (~wrong).any() else float("nan"),
        "mean_weight_wrong": float(weights[wrong].mean()) if wrong.any() else float("nan"),
        "uncertain_label_error": float(wrong[uncertain].mean()) if uncertain.any() else float("nan"),
        "uncertain_mean_weight_right": float(weights[uncertain & ~wrong].mean())
        if (uncertain & ~wrong).any()
        else float("nan"),
        "uncertain_mean_weight_wrong": float(weights[uncertain & wrong].mean())
        if (uncertain & wrong).any()
        else float("nan"),
    }


def secrets_rule(data: Dataset, first_margins: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Secrets of RLHF II: flip the `share` of silver with the lowest mean strength towards its label (round 1's
    ensemble, trained on gold only); no humans."""
    mean, _ = synergy.strengths(first_margins, data.noisy[data.silver])
    flip = np.zeros(len(data.silver), dtype=bool)
    flip[np.argsort(mean, kind="stable")[: round(share * len(data.silver))]] = True
    signs = np.where(flip, -data.noisy[data.silver], data.noisy[data.silver])
    precision, recall = precision_recall(flip, data.flipped[data.silver])
    return (
        data.silver,
        signs,
        {
            "auroc": auroc(-mean, data.flipped[data.silver]),
            "precision": precision,
            "recall": recall,
            "flipped": float(flip.mean()),
            "routed": 0.0,
            "label_error": float((signs != data.truth[data.silver]).mean()),
        },
    )


def cleanlab_method(
    data: Dataset, models: Models, budget: int, *, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """cleanlab.filter.find_label_issues on out-of-fold probabilities: gold (fitting part) + noisy silver cut into
    `folds` folds by prompt; a model trained on the other folds gives each silver pair P(A), P(B) (sigmoid of its
    margin, with a temperature fitted on held-out gold). Its issues ranked by self-confidence; at equal human budget
    the lowest-quality silver pairs (issues first, then the next lowest-quality pairs if it finds fewer issues than
    the budget) go to humans, who give the true label, and the rest of its issues are flipped."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    pool = np.concatenate([data.gold_fit, data.silver])
    labels = np.concatenate([data.truth[data.gold_fit], data.noisy[data.silver]])
    groups: dict[str, list[int]] = {}
    for k, i in enumerate(pool):
        groups.setdefault(json.dumps(data.prompts[i], sort_keys=True), []).append(k)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    fold_of = np.zeros(len(pool), dtype=np.int64)
    for n, key in enumerate(keys):
        fold_of[groups[key]] = n % folds
    p_b = np.zeros(len(pool))
    for fold in range(folds):
        LOG(f"  cleanlab fold {fold + 1}/{folds}")
        train, held = fold_of != fold, fold_of == fold
        scored = np.concatenate([pool[held], data.gold_holdout])
        margins = models.ensemble(pool[train], labels[train], scored, members=1, seed=seed + fold)[0]
        t = fit_temperature(margins[held.sum() :] * data.truth[data.gold_holdout])
        p_b[held] = synergy.probability(margins[: held.sum()], t)
    silver = slice(len(data.gold_fit), None)
    pred_probs = np.stack([1 - p_b, p_b], axis=1)[silver]
    given = (labels[silver] > 0).astype(int)
    issues = find_label_issues(given, pred_probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(given, pred_probs, method="self_confidence")
    order = list(issues) + [int(k) for k in np.argsort(quality, kind="stable") if k not in set(issues.tolist())]
    human = np.zeros(len(data.silver), dtype=bool)
    human[order[:budget]] = True
    flip = np.zeros(len(data.silver), dtype=bool)
    flip[issues] = True
    flip &= ~human
    signs = np.where(flip, -data.noisy[data.silver], data.noisy[data.silver])
    signs = np.where(human, data.truth[data.silver], signs)
    contradicted = np.zeros(len(data.silver), dtype=bool)
    contradicted[issues] = True
    precision, recall = precision_recall(contradicted, data.flipped[data.silver])
    flip_p, flip_r = precision_recall(flip, data.flipped[data.silver])
    return (
        data.silver,
        signs,
        {
            "auroc": auroc(-quality, data.flipped[data.silver]),
            "issues": len(issues),
            "precision": precision,  # of all its issues
            "recall": recall,
            "flip_precision": flip_p,  # of the issues it flips without humans
            "flip_recall": flip_r,
            "flipped": float(flip.mean()),
            "routed": float(human.mean()),
            "routed_flipped": float(data.flipped[data.silver][human].mean()) if human.any() else float("nan"),
            "label_error": float((signs != data.truth[data.silver]).mean()),
        },
    )


# ---------------------------------------------------------------- run


def run_dataset(data: Dataset, args: argparse.Namespace, model_settings: ModelSettings) -> dict:
    settings = CampaignSettings(
        ensemble_size=args.ensemble_size,
        ensemble_kind=args.ensemble_kind,
        epochs=model_settings.epochs,
        max_length=model_settings.max_length,
        batch_size=model_settings.batch_size,
        learning_rate=model_settings.learning_rate,
        backbone=model_settings.backbone,
        contradiction_action="flip",
        retrieval_share=args.retrieval_share,
        max_rounds=args.rounds,
        seed=args.seed,
    )
    split(data, seed=args.seed, noise=args.noise, gold_holdout=settings.gold_holdout)
    settings.budget_per_round = round(args.budget * len(data.silver))
    LOG(
        f"{data.name}: {len(data)} pairs; gold {len(data.gold)} ({len(data.gold_holdout)} held out), silver "
        f"{len(data.silver)} ({int(data.flipped.sum())} flipped), test {len(data.test)}; human budget "
        f"{settings.budget_per_round} per round"
    )
    started = time.perf_counter()
    models = Models(data, model_settings, settings)
    cache_seconds = time.perf_counter() - started
    LOG("  embedding pairs for retrieval")
    t0 = time.perf_counter()
    encoder = PairEncoder(args.retrieval_encoder or default_backbone(), max_length=args.retrieval_max_length)
    pool = np.concatenate([data.gold, data.silver])
    texts = [
        pair_text(
            data.prompts[i],
            "",
            data.a[i],
            data.b[i],
            prompt_chars=args.prompt_chars,
            response_chars=args.response_chars,
        )
        for i in pool
    ]
    index = PairIndex.new(encoder.dim)
    index.add(pool, encoder.encode(texts))
    embed_seconds = time.perf_counter() - t0
    LOG(f"  embedded {len(texts)} pairs in {embed_seconds:.0f} s")

    concord = Campaign(data, models, settings, index, routing="concord", seed=args.seed)
    random_arm = Campaign(data, models, settings, index, routing="random", seed=args.seed)
    first = concord.run_round(1)
    random_arm.run_round(1, margins=first)  # the same round-1 ensemble: both start from gold alone
    for number in range(2, args.rounds + 1):
        concord.run_round(number)
        random_arm.run_round(number)

    assert concord.first_margins is not None
    gold_pairs, gold_signs = data.gold_fit, data.truth[data.gold_fit]
    secrets_rows = secrets_rule(data, concord.first_margins, args.secrets_share)
    total_budget = concord.spent
    cleanlab_rows = cleanlab_method(data, models, total_budget, folds=args.folds, seed=args.seed + 500)

    def with_gold(pairs: np.ndarray, signs: np.ndarray, weights: np.ndarray | None = None) -> tuple:
        """Gold's fitting part (weight 1, as a gold row) + a method's silver rows (weight 1 unless given)."""
        weights = np.ones(len(pairs)) if weights is None else weights
        return (
            np.concatenate([gold_pairs, pairs]),
            np.concatenate([gold_signs, signs]),
            np.concatenate([np.ones(len(gold_pairs)), weights]),
        )

    # Concord's (b) under both uncertain_action values, from the same campaign: keep (the default) and leave_out.
    keep_settings = dataclasses.replace(settings, uncertain_action="keep")
    leave_settings = dataclasses.replace(settings, uncertain_action="leave_out")
    curated = {
        "concord": concord.curated_rows(keep_settings),
        "concord_leave_out": concord.curated_rows(leave_settings),
        "random": random_arm.curated_rows(settings),  # the same rules: the default uncertain_action
    }
    if args.drop_variant:
        curated["concord_drop"] = concord.curated_rows(settings, flips_dropped=True)
    for name, rows in curated.items():
        c = rows[3]
        LOG(
            f"  {name}: {c['rows']} silver rows {c['by_source']}, wrong labels {c['label_error']:.3f} (weighted "
            f"{c['weighted_label_error']:.3f}), mean weight right {c['mean_weight_right']:.3f} wrong "
            f"{c['mean_weight_wrong']:.3f}"
        )
    training_sets = {
        "noisy": with_gold(data.silver, data.noisy[data.silver]),
        "concord": with_gold(*curated["concord"][:3]),
        "concord_leave_out": with_gold(*curated["concord_leave_out"][:3]),
        "clean": with_gold(data.silver, data.truth[data.silver]),
        "random": with_gold(*curated["random"][:3]),
        "secrets": with_gold(*secrets_rows[:2]),
        "cleanlab": with_gold(*cleanlab_rows[:2]),
    }
    if args.drop_variant:
        training_sets["concord_drop"] = with_gold(*curated["concord_drop"][:3])
    accuracy = {}
    sizes = {}
    weight_sums = {}
    for name, (pairs, signs, weights) in training_sets.items():
        LOG(f"  test model on {name} ({len(pairs)} pairs, weight {weights.sum():.0f})")
        accuracy[name] = models.test_accuracy(pairs, signs, seed=args.seed + 900, weights=weights)
        sizes[name] = len(pairs)
        weight_sums[name] = float(weights.sum())
        LOG(f"    test accuracy {accuracy[name]:.4f}")
    strong = {}
    if models.strong is not None:
        for name in args.strong_methods.split(","):
            if name in training_sets:
                pairs, signs, weights = training_sets[name]
                LOG(f"  test model with the top layer trained, on {name} ({len(pairs)} pairs)")
                strong[name] = models.test_accuracy(pairs, signs, seed=args.seed + 900, strong=True, weights=weights)
                LOG(f"    test accuracy {strong[name]:.4f}")
    return {
        "name": data.name,
        "pairs": len(data),
        "gold": len(data.gold),
        "gold_holdout": len(data.gold_holdout),
        "silver": len(data.silver),
        "flipped": int(data.flipped.sum()),
        "test": len(data.test),
        "budget": settings.budget_per_round,
        "spent": {"concord": concord.spent, "random": random_arm.spent, "cleanlab": total_budget},
        "concord": [dataclasses.asdict(r) for r in concord.reports],
        "random": [dataclasses.asdict(r) for r in random_arm.reports],
        "secrets": secrets_rows[2],
        "cleanlab": cleanlab_rows[2],
        "accuracy": accuracy,
        "strong": strong,
        "sizes": sizes,
        "weight_sums": weight_sums,
        "curated": {name: rows[3] for name, rows in curated.items()},
        "seconds": {
            "cache": cache_seconds,
            "embed": embed_seconds,
            "training": models.seconds,
            "strong": models.strong_seconds,
            "total": time.perf_counter() - started,
        },
        "pairs_trained": models.pairs_trained,
        "settings": settings.to_dict(),
    }


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--quick", action="store_true", help="300 pairs a file, 2 rounds, 2 epochs: a smoke run.")
    parser.add_argument("--datasets", default="hh,pandalm", help="Comma-separated: hh, pandalm.")
    parser.add_argument("--mode", choices=("cached", "full"), default="cached")
    parser.add_argument("--backbone", default="", help="A local checkpoint directory; default: default_backbone().")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-steps", type=int, default=150, help="cached mode: more epochs for small sets.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--learning-rate", type=float, default=0.0, help="0: 1e-3 head only, 1e-4 top layers, 2e-5 full."
    )
    parser.add_argument("--trainable-layers", type=int, default=0, help="cached mode: top layers trained (0: head).")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--ensemble-kind", choices=synergy.ENSEMBLE_KINDS, default="seeds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.10, help="Human budget per round, share of silver.")
    parser.add_argument("--secrets-share", type=float, default=0.20)
    parser.add_argument("--folds", type=int, default=3, help="cleanlab's cross-fitting folds.")
    parser.add_argument(
        "--retrieval-share",
        type=float,
        default=CampaignSettings.retrieval_share,
        help="CampaignSettings.retrieval_share: the budget's share for neighbours of gold errors.",
    )
    parser.add_argument("--retrieval-encoder", default="")
    parser.add_argument("--retrieval-max-length", type=int, default=128)
    parser.add_argument("--prompt-chars", type=int, default=200)
    parser.add_argument("--response-chars", type=int, default=120)
    parser.add_argument("--drop-variant", action="store_true", help="Also a test model on Concord's data with drop.")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 beats 2 on a CPU shared with other work."
    )
    parser.add_argument(
        "--strong-layers", type=int, default=1, help="cached mode: test models also with this many top layers trained."
    )
    parser.add_argument("--strong-epochs", type=int, default=2)
    parser.add_argument("--strong-methods", default="noisy,concord,concord_leave_out,clean,random,secrets,cleanlab")
    parser.add_argument("--from-json", type=Path, help="Rewrite the section from a finished run's results file.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    saved = json.loads(args.from_json.read_text()) if args.from_json else None
    if saved is not None:  # the finished run's own flags, so the section states what it ran
        args = parser.parse_args(saved["argv"] + (["--no-write"] if args.no_write else []))
    if args.quick:
        args.rounds, args.epochs, args.folds, args.min_steps = 2, 2, 2, 20
    if args.threads:
        torch.set_num_threads(args.threads)
    if saved is not None:
        sys.argv[1:] = saved["argv"]
        finish(saved["results"], args, saved["seconds"], saved.get("threads", args.threads))
        return
    torch.manual_seed(args.seed)
    model_settings = _model_settings(args)
    started = time.perf_counter()
    results = []
    for name in args.datasets.split(","):
        data = load_hh(args.data / HH_FILE, args.seed) if name == "hh" else load_pandalm(args.data / PANDALM_FILE)
        if args.quick:
            data = subset(data, 300, args.seed)
        results.append(run_dataset(data, args, model_settings))
    seconds = time.perf_counter() - started
    LOG(f"done in {seconds:.0f} s")
    out = Path(tempfile.gettempdir()) / ("synergy_quick.json" if args.quick else "synergy_results.json")
    saved = {"results": results, "seconds": seconds, "argv": sys.argv[1:], "threads": torch.get_num_threads()}
    out.write_text(json.dumps(saved, indent=1, default=str))
    LOG(f"results in {out}")
    finish(results, args, seconds, torch.get_num_threads())


def finish(results: list[dict], args: argparse.Namespace, seconds: float, threads: int) -> None:
    model_settings = _model_settings(args)
    body = report(results, args, model_settings, seconds, threads)
    print(body)
    if not args.no_write and not args.quick:
        SVG.parent.mkdir(parents=True, exist_ok=True)
        SVG.write_text(plot(results))
        write_section(SECTION, body)


def _model_settings(args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(
        mode=args.mode,
        backbone=args.backbone or default_backbone(),
        max_length=args.max_length,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate or (2e-5 if args.mode == "full" else 1e-4 if args.trainable_layers else 1e-3),
        trainable_layers=args.trainable_layers,
        min_steps=args.min_steps,
        strong_layers=0 if args.trainable_layers else args.strong_layers,
        strong_epochs=args.strong_epochs,
    )


# ---------------------------------------------------------------- report


METHODS = (
    ("noisy", "(a) gold + noisy silver"),
    ("concord", "(b) Concord synergy curation after the last round, uncertain_action keep (default)"),
    ("concord_leave_out", "(b) the same campaign, uncertain_action leave_out"),
    ("clean", "(c) gold + clean silver"),
    ("random", "random routing (same rules, keep; random pairs to humans)"),
    ("secrets", "Secrets of RLHF II: flip lowest 20%, no humans"),
    ("cleanlab", "cleanlab find_label_issues, lowest quality to humans"),
    ("concord_drop", "Concord, contradictions dropped instead of flipped"),
)


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def report(results: list[dict], args: argparse.Namespace, ms: ModelSettings, seconds: float, threads: int) -> str:
    lines: list[str] = []
    command = ".venv/bin/python bench/synergy.py" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:]))
    for r in results:
        n_test = r["test"]
        acc = r["accuracy"]
        lines += [
            f"### {r['name']}",
            "",
            f"{r['pairs']} pairs: gold {r['gold']} ({r['gold_holdout']} of them held out for temperature and "
            f"checkpoint choice), silver {r['silver']} with {r['flipped']} labels flipped, test {n_test}. Human "
            f"budget {r['budget']} pairs per round; spent: Concord {r['spent']['concord']}, random routing "
            f"{r['spent']['random']}, cleanlab {r['spent']['cleanlab']} (set to Concord's). "
            f"{r['seconds']['total']:.0f} s ({r['seconds']['cache']:.0f} s caching frozen layers, "
            f"{r['seconds']['embed']:.0f} s embedding for retrieval, {r['seconds']['training']:.0f} s training "
            "and scoring).",
            "",
            "Per round (shares of silver are cumulative; AUROC of the ensemble's mean strength towards the silver "
            "label, low = flipped, on the silver pairs that ensemble did not train on; precision and recall of the "
            "machine's flips against the pairs truly flipped):",
            "",
            "| arm | round | trained on | gold held-out acc. | T | AUROC (pairs) | spread AUROC | accepted "
            "| flipped | to humans (of them flipped) | undecided | flip precision | flip recall "
            "| wrong labels in decided silver |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for arm in ("concord", "random"):
            for x in r[arm]:
                lines.append(
                    f"| {arm} | {x['round']} | {x['trained_on']} | {_pct(x['gold_holdout_accuracy'])} | "
                    f"{x['temperature']:.2f} | {x['auroc']:.3f} ({x['auroc_pairs']}) | {x['spread_auroc']:.3f} | "
                    f"{_pct(x['accepted'])} | {_pct(x['flipped'])} | {_pct(x['routed'])} "
                    f"({_pct(x['routed_flipped'])}) | {_pct(x['uncertain_left'])} | {_pct(x['flip_precision'])} | "
                    f"{_pct(x['flip_recall'])} | {_pct(x['label_error'])} |"
                )
        last = r["concord"][-1]
        s, c = r["secrets"], r["cleanlab"]
        lines += [
            "",
            "Flip detection by method (silver; AUROC of each method's own score, precision and recall of the pairs "
            "it marks as wrong):",
            "",
            "| method | score | AUROC | marked wrong | precision | recall | to humans "
            "| wrong labels in its silver (Concord: decided pairs) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| Concord, round 1 (gold-only ensemble) | mean strength | {r['concord'][0]['auroc']:.3f} | "
            f"{_pct(r['concord'][0]['flipped'])} | {_pct(r['concord'][0]['flip_precision'])} | "
            f"{_pct(r['concord'][0]['flip_recall'])} | {_pct(r['concord'][0]['routed'])} | "
            f"{_pct(r['concord'][0]['label_error'])} |",
            f"| Concord, after round {last['round']} | mean strength | {last['auroc']:.3f} | {_pct(last['flipped'])} "
            f"| {_pct(last['flip_precision'])} | {_pct(last['flip_recall'])} | {_pct(last['routed'])} | "
            f"{_pct(last['label_error'])} |",
            f"| random routing, after round {r['random'][-1]['round']} | mean strength | "
            f"{r['random'][-1]['auroc']:.3f} | {_pct(r['random'][-1]['flipped'])} | "
            f"{_pct(r['random'][-1]['flip_precision'])} | {_pct(r['random'][-1]['flip_recall'])} | "
            f"{_pct(r['random'][-1]['routed'])} | {_pct(r['random'][-1]['label_error'])} |",
            f"| Secrets of RLHF II (flip lowest {100 * args.secrets_share:.0f}%) | round-1 mean strength | "
            f"{s['auroc']:.3f} | {_pct(s['flipped'])} | {_pct(s['precision'])} | {_pct(s['recall'])} | 0% | "
            f"{_pct(s['label_error'])} |",
            f"| cleanlab ({args.folds}-fold out-of-fold) | self-confidence | {c['auroc']:.3f} | "
            f"{c['issues']} issues | {_pct(c['precision'])} | {_pct(c['recall'])} | {_pct(c['routed'])} | "
            f"{_pct(c['label_error'])} |",
            "",
        ]
        lines += _curated_table(r)
        lines += [
            f"Test accuracy of one model per training set ({n_test} test pairs; ± one standard error, "
            "sqrt(p(1-p)/n)); the head-only model is the one the campaign's ensembles use, the other column trains "
            "the top transformer layer too. Pairs: gold's fitting part + the method's silver rows, with the sum of "
            "their weights where rows are weighted:",
            "",
            "| training data | pairs (weight) | head on the frozen backbone | top layer trained too |",
            "| --- | --- | --- | --- |",
        ]
        strong = r.get("strong", {})
        weight_sums = r.get("weight_sums", {})
        for key, label in METHODS:
            if key in acc:
                cells = [
                    f"{_pct(x)} ± {100 * standard_error(x, n_test):.1f}" if x == x else "n/a"
                    for x in (acc[key], strong.get(key, float("nan")))
                ]
                size = str(r["sizes"][key])
                if key in weight_sums and abs(weight_sums[key] - r["sizes"][key]) > 0.5:
                    size += f" ({weight_sums[key]:.0f})"
                lines.append(f"| {label} | {size} | {cells[0]} | {cells[1]} |")
        lines += ["", "Head only: " + _gap_sentences(acc, n_test)[0], ""]
        if {"noisy", "concord", "clean"} <= set(strong):
            lines += ["Top layer trained too: " + _gap_sentences(strong, n_test)[0], ""]
    m = ms
    lines += [
        "### Settings and what was traded",
        "",
        f"Command: `{command}`; {seconds / 60:.0f} minutes on {machine()}, {threads} torch thread(s), "
        "CPU only. Seed " + str(args.seed) + " for splits, noise, members and routing.",
        "",
        _settings_paragraph(args, m),
        "",
        _reading_paragraph(results),
        "",
        _aim_paragraph(results),
        "",
        "![Flip-detection AUROC per round and test accuracy by method](img/synergy.svg)",
    ]
    return "\n".join(lines)


def _weight(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def _curated_table(r: dict) -> list[str]:
    """What enters (b) under each uncertain_action (and random routing's set), from `synergy.kept_label`."""
    curated = r.get("curated", {})
    if not curated:
        return []
    names = {
        "concord": "Concord, keep (default)",
        "concord_leave_out": "Concord, leave_out",
        "random": "random routing, keep",
        "concord_drop": "Concord, keep, contradictions dropped",
    }
    lines = [
        "What enters the curated silver (`synergy.kept_label` on each pair's decision after the last round; a "
        "human-answered pair is a gold row of weight 1, an accepted, flipped or (keep) still uncertain one has "
        "weight = its confidence; wrong labels plain and weighted by the rows' weights; mean weight of rows whose "
        "label is right and wrong, overall and among the uncertain rows):",
        "",
        "| silver set | rows | humans / accepted / flipped / uncertain | weight | wrong labels (weighted) "
        "| mean weight right / wrong | uncertain rows: wrong labels, mean weight right / wrong |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, name in names.items():
        if key not in curated:
            continue
        c = curated[key]
        b = c["by_source"]
        uncertain = (
            f"{_pct(c['uncertain_label_error'])}, {_weight(c['uncertain_mean_weight_right'])} / "
            f"{_weight(c['uncertain_mean_weight_wrong'])}"
            if b["uncertain"]
            else "none"
        )
        lines.append(
            f"| {name} | {c['rows']} | {b['human']} / {b['accept']} / {b['flip']} / {b['uncertain']} | "
            f"{c['weight_sum']:.0f} | {_pct(c['label_error'])} ({_pct(c['weighted_label_error'])}) | "
            f"{_weight(c['mean_weight_right'])} / {_weight(c['mean_weight_wrong'])} | {uncertain} |"
        )
    return [*lines, ""]


def _gap_sentences(acc: dict[str, float], n: int) -> list[str]:
    a, c = acc["noisy"], acc["clean"]
    se_gap = math.sqrt(standard_error(a, n) ** 2 + standard_error(c, n) ** 2)
    gap = c - a
    out = [
        f"Gap (c) - (a): {100 * gap:+.1f} points, standard error of the difference {100 * se_gap:.1f} points "
        "(the two accuracies taken as independent; they are measured on the same test pairs)."
    ]
    if abs(gap) < 2 * se_gap:
        out.append(
            "The gap is not significant (under 2 standard errors), so the share of it that curation closes is noise "
            "and is not reported."
        )
    else:
        for key, label in (("concord", "keep"), ("concord_leave_out", "leave_out")):
            if key in acc:
                out.append(f"Curation (b, {label}) closes {100 * (acc[key] - a) / gap:.0f}% of it.")
    compared = [
        ("concord", "concord_leave_out", "Concord keep - Concord leave_out"),
        ("concord", "noisy", "Concord keep - (a)"),
        ("concord_leave_out", "noisy", "Concord leave_out - (a)"),
        ("concord", "random", "Concord keep - random routing"),
        ("concord", "secrets", "Concord keep - Secrets of RLHF II"),
        ("concord", "cleanlab", "Concord keep - cleanlab"),
    ]
    for one, other, label in compared:
        if one in acc and other in acc:
            d = acc[one] - acc[other]
            se = math.sqrt(standard_error(acc[one], n) ** 2 + standard_error(acc[other], n) ** 2)
            verdict = "not significant" if abs(d) < 2 * se else "significant"
            out.append(f"{label}: {100 * d:+.1f} ± {100 * se:.1f} points ({verdict}).")
    return [" ".join(out)]


def _settings_paragraph(args: argparse.Namespace, m: ModelSettings) -> str:
    if m.mode == "full":
        models = (
            f"Models (full mode): `training.ml.trainer.train`, whole model fine-tuned, backbone {m.backbone}, max "
            f"length {m.max_length}, {m.epochs} epochs, batch {m.batch_size}, learning rate {m.learning_rate:g}."
        )
    elif m.trainable_layers:
        models = (
            f"Models (cached mode): the default backbone (all-MiniLM-L6-v2, 6 layers, 22M parameters) runs its lower "
            f"{6 - m.trainable_layers} layers once, frozen, over every (prompt, response) text at max length "
            f"{m.max_length}; each model trains the top {m.trainable_layers} layer(s) and a linear head on the "
            "mean-pooled token states."
        )
    else:
        models = (
            "Models (cached mode): the default backbone (all-MiniLM-L6-v2, 22M parameters) runs once, frozen, over "
            f"every (prompt, response) text at max length {m.max_length}, and its last token states are kept; each "
            "model trains only a head on them (a per-token MLP, 384 -> 128 with GELU, pooled by learnt attention "
            "weights and by the mean, then a linear reward; 50k parameters)."
        )
    if m.mode != "full":
        models += (
            " Bradley-Terry (`training.ml.losses.bradley_terry`, each pair's loss scaled by its row weight: the "
            "weighted mean per batch), AdamW (weight decay 0.01), peak learning rate "
            f"{m.learning_rate:g}, 10% warmup, linear decay, batch {m.batch_size} pairs, {m.epochs} epochs or more "
            f"to reach {m.min_steps} steps on small sets, the epoch with the best held-out gold accuracy kept "
            "(checkpoint by eval accuracy)."
        )
    if m.mode != "full" and m.strong_layers:
        models += (
            f" Test models are also trained a second way, with the top {m.strong_layers} transformer layer(s) "
            f"trained as well on the cached lower layers (learning rate 1e-4, {m.strong_epochs} epoch(s), the same "
            "pooling + linear head as that mode), to show what the head-only trade costs."
        )
    return " ".join(
        [
            models,
            f"Ensemble: {args.ensemble_size} members ({args.ensemble_kind}: own initialisation and batch order); "
            "decisions by `training.ml.synergy.decide_silver` with the default CampaignSettings thresholds (accept "
            "and contradict at p >= 0.7, contradiction_action flip) on p = sigmoid(mean strength / T), T fitted on "
            "held-out gold (`training.ml.evaluate.fit_temperature`). Routing: up to `synergy.retrieval_budget` of the "
            f"budget (retrieval_share {args.retrieval_share:g}) by error-driven "
            "retrieval (`training.ml.retrieval.retrieve`, k from `synergy.retrieval_k`, every gold pair a query, "
            "worst first, over the undecided silver, a confident decision of this round included; `pair_text` cut "
            f"to {args.prompt_chars}/{args.response_chars} characters and embedded once by `PairEncoder` with the "
            f"default encoder at max length {args.retrieval_max_length}), the rest the most uncertain "
            "(`synergy.uncertainty`) of the round's uncertain pairs, which also take what retrieval leaves unused. "
            "Once decided (accepted, flipped, answered by humans) a pair stays decided; each round's ensemble trains "
            "on gold + human-answered + accepted silver, unweighted (the worker's rounds train on the previous "
            "round's version instead, its flipped and, under keep, uncertain rows included). (b): after the last "
            "round, every silver pair's row as the worker builds it (`_decision_row`): `synergy.kept_label` on its "
            "decision, its silver label and p_agree (accepted or flipped: the deciding round's p; still undecided: "
            "the last round's, as an uncertain decision), weight = the confidence it returns (margin = "
            "`synergy.ai_margin` of it, unused by plain Bradley-Terry); human-answered pairs are gold rows of "
            "weight 1. The same campaign gives (b) under both uncertain_action values: keep (the default: uncertain "
            "pairs stay with their silver label, weighted by p_agree) and leave_out (Skywork: only confident "
            "decisions and human answers). "
            "Random routing: the same rounds and rules (keep), its budget drawn at random from the round's uncertain "
            "pairs, with its own ensembles from round 2. Secrets of RLHF II: round 1's ensemble (gold only), the "
            f"{100 * args.secrets_share:.0f}% of silver with the lowest mean strength flipped, no humans. cleanlab: "
            f"{args.folds}-fold cross-fitting by prompt over gold + noisy silver with the same model settings, "
            "P(B) = sigmoid(margin / T); `cleanlab.filter.find_label_issues` ranked by self-confidence; the "
            "lowest-quality silver pairs (its issues first) up to Concord's total human spend go to humans, the rest "
            "of its issues are flipped. Every test model: one model, the same settings and seed, trained on gold's "
            "fitting part + the method's silver rows (weight 1 unless the method weights them).",
            "Traded for the 2-core CPU, which other work shared during the run: full fine-tuning runs about 1.7 "
            'pairs/s at max length 256 here ("train quality" above), and the run needs about 20 trainings per '
            "data set. Training the top layer on cached lower layers measured 4.8 pairs/s in a probe (forward and "
            "backward, 2 threads, machine shared), too slow for the campaign's 20 trainings, so only the test models "
            "get it; a head on the frozen last layer measured 83 pairs/s (1 thread; 17 pairs/s with 2 threads, which "
            "fight the other work for the cores, hence `--threads 1`). The price is the backbone's own adaptation: "
            "a frozen encoder tells harmful from "
            "harmless answers less well (a logistic head on frozen embeddings scored 54.7% against 61.5% fine-tuned "
            "on HH helpful pairs), and members that share a frozen backbone and differ only in their heads disagree "
            "little, so the spread says little. Max length 128 (from 256) halves the tokens and cuts the longer HH "
            "transcripts from the left. On a GPU, `--mode full --backbone DIR --epochs 2` runs the same bench "
            "through Concord's trainer (with select_best and ensemble_kind when TrainConfig has them).",
        ]
    )


def _aim_paragraph(results: list[dict]) -> str:
    """How far the run got from the issue's aim (AUROC >= 0.9, >= 75% of the gap closed), and why."""
    parts = []
    for r in results:
        best = max(x["auroc"] for x in r["concord"])
        clean = r["accuracy"]["clean"]
        parts.append(
            f"{r['name']}: best flip-detection AUROC {best:.3f} (aim 0.9); a model of the campaign's kind trained on "
            f"gold + all the clean silver scores {_pct(clean)} on the test pairs."
        )
    return " ".join(
        [
            "Against the aim.",
            *parts,
            "A reward model that orders only that share of clean pairs correctly cannot tell a flipped label from a "
            "right one much better than a coin flip either, and a head on a frozen 22M-parameter encoder is far "
            "from the strong reward models (and LLM judges) behind the papers' curation; "
            + (
                "no gap between (a) and (c) is significant here, so no share of it closed can be read. "
                if not any(_gap_significant(r) for r in results)
                else "where the gap between (a) and (c) is significant, the share closed is under its table. "
            )
            + "The aim needs the full mode on a GPU with a larger backbone.",
        ]
    )


def _gap_significant(r: dict) -> bool:
    """Whether (c) - (a) reaches 2 standard errors in either column."""
    n = r["test"]
    for acc in (r["accuracy"], r.get("strong", {})):
        if "noisy" in acc and "clean" in acc:
            a, c = acc["noisy"], acc["clean"]
            if abs(c - a) >= 2 * math.sqrt(standard_error(a, n) ** 2 + standard_error(c, n) ** 2):
                return True
    return False


def _reading_paragraph(results: list[dict]) -> str:
    """What the rules did with an ensemble this weak, in the run's own numbers."""
    parts = []
    for r in results:
        last, first = r["concord"][-1], r["concord"][0]
        temperatures = [x["temperature"] for arm in ("concord", "random") for x in r[arm]]
        at_bound = [t for t in temperatures if t in (0.05, 20.0)]
        sizes, noisy = r["sizes"], r["sizes"]["noisy"]
        text = (
            f"{r['name']}: after round {last['round']} the ensemble had accepted {_pct(last['accepted'])} and "
            f"flipped {_pct(last['flipped'])} of silver and left {_pct(last['uncertain_left'])} undecided."
        )
        curated = r.get("curated", {})
        if "concord_leave_out" in curated and "concord" in curated:
            leave, keep = curated["concord_leave_out"], curated["concord"]
            text += (
                f" Under leave_out (b) trains on {sizes['concord_leave_out']} pairs against (a)'s {noisy} "
                f"({100 * sizes['concord_leave_out'] / noisy:.0f}% as many), its silver with "
                f"{_pct(leave['label_error'])} wrong labels against 25%. Under keep it trains on "
                f"{sizes['concord']} pairs of total weight {r['weight_sums']['concord']:.0f}, its silver with "
                f"{_pct(keep['label_error'])} wrong labels ({_pct(keep['weighted_label_error'])} weighted)"
            )
            if keep["by_source"]["uncertain"]:
                text += (
                    f"; its {keep['by_source']['uncertain']} uncertain rows carry "
                    f"{_pct(keep['uncertain_label_error'])} wrong labels, and p_agree weighs a wrong one "
                    f"{keep['uncertain_mean_weight_wrong']:.3f} on average against "
                    f"{keep['uncertain_mean_weight_right']:.3f} for a right one"
                )
            text += "."
        else:  # a results file from before both variants
            text += f" (b) trains on {sizes['concord']} pairs against (a)'s {noisy}."
        if at_bound:
            text += (
                f" The temperature fitted on {r['gold_holdout']} held-out gold pairs hit a bound of "
                f"`fit_temperature`'s range (0.05 or 20) in {len(at_bound)} of {len(temperatures)} fits: at 20 every "
                "p is near 0.5 and nothing is decided."
            )
        text += f" Round 1's pairs to humans were {_pct(first['routed_flipped'])} flipped (25% at random)."
        parts.append(text)
    decided = max(x["accepted"] + x["flipped"] for r in results for x in r["concord"])
    return " ".join(
        [
            "Reading. With p_agree from a weak ensemble, calibrated on held-out gold, few silver pairs reach "
            f"decide_silver's 0.7 (at most {_pct(decided)} of silver accepted or flipped in any round), so under "
            "leave_out Concord's curation comes down to the humans' answers plus the few pairs it is sure of, and "
            "under keep the rest stays with its silver label at a weight of p_agree, which is near 0.5 where the "
            "ensemble knows little and so separates wrong labels from right ones only as well as its flip-detection "
            "AUROC allows.",
            *parts,
            "Secrets of RLHF II's rule and cleanlab flip by rank rather than by calibrated confidence: they mark many "
            "more pairs, of which only "
            + ", ".join(f"{_pct(r[k]['precision'])}" for r in results for k in ("secrets", "cleanlab"))
            + " (Secrets, cleanlab; per data set in order) were truly flipped against a base rate of 25%, so their "
            "silver ends with "
            + ", ".join(f"{_pct(r[k]['label_error'])}" for r in results for k in ("secrets", "cleanlab"))
            + " wrong labels, against 25% before.",
            _significance(results),
        ]
    )


def _significance(results: list[dict]) -> str:
    """Whether any two test accuracies of a data set (either column) differ by 2 standard errors or more, and how
    many such differences chance alone would give among that many comparisons."""
    worst, where, count, reaching = 0.0, "", 0, 0
    for r in results:
        n = r["test"]
        head = [(f"{k} (head)", v) for k, v in r["accuracy"].items()]
        top = [(f"{k} (top layer)", v) for k, v in r.get("strong", {}).items()]
        # Methods within a column, and each method across the two columns (the trade).
        compared = [(x, y) for column in (head, top) for i, x in enumerate(column) for y in column[i + 1 :]]
        compared += [(x, y) for x in head for y in top if x[0].split(" ")[0] == y[0].split(" ")[0]]
        for (name_a, a), (name_b, b) in compared:
            z = abs(a - b) / math.sqrt(standard_error(a, n) ** 2 + standard_error(b, n) ** 2)
            count += 1
            reaching += z >= 2
            if z > worst:
                worst, where = z, f"{r['name']}: {name_a} {_pct(a)} against {name_b} {_pct(b)}"
    head = (
        f"Of the {count} pairs of test accuracies compared within a data set (methods within a column, and each "
        "method across the two columns), "
    )
    chance = (
        f"; among {count} comparisons about {0.046 * count:.0f} would reach 2 SE by chance alone if no method "
        "differed (5% each, and they are not independent)"
    )
    tail = (
        ' The 62.8% of full fine-tuning at max length 256 ("Reward model quality" above, another split) is the '
        "distance to a fine-tuned model."
    )
    if worst < 2:
        return (
            head + f"none reaches two standard errors of their difference; the widest is {worst:.1f} SE ({where}). "
            "So neither curation's effect, nor keep against leave_out, nor the cost of the head-only trade (the two "
            "columns) is measurable at these test sizes." + tail
        )
    return (
        head
        + f"{reaching} reach two standard errors of their difference, the widest {worst:.1f} SE ({where})"
        + chance
        + ", so one such difference alone is weak evidence; the per-method sentences under each table say which."
        + tail
    )


def plot(results: list[dict]) -> str:
    """A hand-written SVG (matplotlib is not in the environment): per data set, flip-detection AUROC by round
    (Concord and random routing; Secrets and cleanlab, which do not run rounds, as squares at round 1) and test
    accuracy by method with one-SE bars, head-only models solid, top-layer models pale."""
    width, height = 560, 280
    panels = []
    for k, r in enumerate(results):
        panels.append(_auroc_panel(r, k * width, 0, width, height))
        panels.append(_accuracy_panel(r, k * width, height, width, height))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(results)}" height="{2 * height}" '
        'font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(panels)
        + "\n</svg>\n"
    )


COLOURS = {
    "concord": "#1f77b4",
    "concord_leave_out": "#17becf",
    "random": "#ff7f0e",
    "secrets": "#2ca02c",
    "cleanlab": "#d62728",
}
LEFT, RIGHT, TOP, BOTTOM = 44, 20, 56, 34


def _axis(x: int, y: int, w: int, h: int, lo: float, hi: float, ticks: Sequence[float]) -> tuple[list[str], object]:
    def py(v: float) -> float:
        return y + h - BOTTOM - (h - TOP - BOTTOM) * (min(max(v, lo), hi) - lo) / (hi - lo)

    parts = []
    for v in ticks:
        parts.append(f'<line x1="{x + LEFT}" x2="{x + w - RIGHT}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x + LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    return parts, py


def _legend(x: int, y: int, items: Sequence[tuple[str, str]], step: int) -> list[str]:
    parts = []
    for k, (colour, label) in enumerate(items):
        lx = x + LEFT + step * k
        parts.append(f'<rect x="{lx}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14}" y="{y + 9}">{label}</text>')
    return parts


def _auroc_panel(r: dict, x: int, y: int, w: int, h: int) -> str:
    rounds = len(r["concord"])
    parts, py = _axis(x, y, w, h, 0.4, 1.0, (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
    inner = w - LEFT - RIGHT - 60

    def px(i: int) -> float:
        return x + LEFT + 30 + (inner * i / (rounds - 1) if rounds > 1 else inner / 2)

    parts.insert(
        0,
        f'<text x="{x + w / 2}" y="{y + 16}" text-anchor="middle" font-weight="bold">'
        f"{r['name']}: flip-detection AUROC</text>",
    )
    parts += _legend(
        x,
        y + 26,
        [
            (COLOURS[k], n)
            for k, n in (
                ("concord", "Concord"),
                ("random", "random routing"),
                ("secrets", "Secrets II"),
                ("cleanlab", "cleanlab"),
            )
        ],
        105,
    )
    parts.append(
        f'<line x1="{x + LEFT}" x2="{x + w - RIGHT}" y1="{py(0.9):.1f}" y2="{py(0.9):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>'
    )
    parts.append(f'<text x="{x + w - RIGHT}" y="{py(0.9) - 3:.1f}" text-anchor="end" fill="#666">aim 0.9</text>')
    for i in range(rounds):
        parts.append(f'<text x="{px(i):.1f}" y="{y + h - BOTTOM + 16}" text-anchor="middle">round {i + 1}</text>')
    for arm in ("concord", "random"):
        points = " ".join(f"{px(i):.1f},{py(v['auroc']):.1f}" for i, v in enumerate(r[arm]))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{COLOURS[arm]}" stroke-width="2"/>')
        parts += [
            f'<circle cx="{px(i):.1f}" cy="{py(v["auroc"]):.1f}" r="3" fill="{COLOURS[arm]}"/>'
            for i, v in enumerate(r[arm])
        ]
    for k, key in enumerate(("secrets", "cleanlab")):
        v = r[key]["auroc"]
        parts.append(
            f'<rect x="{px(0) - 22 - 10 * k:.1f}" y="{py(v) - 4:.1f}" width="8" height="8" fill="{COLOURS[key]}"/>'
        )
    return "\n".join(parts)


def _accuracy_panel(r: dict, x: int, y: int, w: int, h: int) -> str:
    acc, strong, n = r["accuracy"], r.get("strong", {}), r["test"]
    keys = [k for k, _ in METHODS if k in acc]
    names = {
        "noisy": "(a) noisy",
        "concord": "(b) keep",
        "concord_leave_out": "(b) leave_out",
        "clean": "(c) clean",
        "random": "random",
        "secrets": "Secrets II",
        "cleanlab": "cleanlab",
        "concord_drop": "Concord drop",
    }
    values = list(acc.values()) + list(strong.values())
    hi = max(0.8, round(max(values) + 0.1, 1))
    parts, py = _axis(x, y, w, h, 0.4, hi, [v / 10 for v in range(4, round(hi * 10) + 1)])
    parts.insert(
        0,
        f'<text x="{x + w / 2}" y="{y + 16}" text-anchor="middle" font-weight="bold">'
        f"{r['name']}: test accuracy (± 1 SE)</text>",
    )
    parts += _legend(x, y + 26, [("#555", "head on frozen backbone"), ("#bbb", "top layer trained too")], 170)
    slot = (w - LEFT - RIGHT) / len(keys)
    for k, key in enumerate(keys):
        colour = COLOURS.get(key, "#7f7f7f")
        bars = [(acc[key], 1.0)] + ([(strong[key], 0.4)] if key in strong else [])
        for b, (v, opacity) in enumerate(bars):
            bx = x + LEFT + slot * k + slot * 0.1 + b * slot * 0.4
            se = standard_error(v, n)
            parts.append(
                f'<rect x="{bx:.1f}" y="{py(v):.1f}" width="{slot * 0.38:.1f}" '
                f'height="{py(0.4) - py(v):.1f}" fill="{colour}" fill-opacity="{opacity}"/>'
            )
            cx = bx + slot * 0.19
            parts.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{py(v - se):.1f}" y2="{py(v + se):.1f}" stroke="black"/>'
            )
        label_x = x + LEFT + slot * (k + 0.5)
        parts.append(
            f'<text x="{label_x:.1f}" y="{y + h - BOTTOM + 16}" text-anchor="middle" font-size="10">{names[key]}</text>'
        )
    return "\n".join(parts)


if __name__ == "__main__":
    main()
