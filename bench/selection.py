"""Selective annotation (issue 13): which pairs to label next. A simulated annotator (a pair's label is the file's
own) on HH-RLHF harmless-base and the PandaLM test set: each strategy of training.ml.selection starts from the same
50 random labelled pairs and adds labels in batches of 50 up to half the pool, the reward model retrained between
batches and scored on held-out test pairs at every step. No Django: the files are read with annotate.formats
(bench/synergy.py's loaders). Writes a section of docs/benchmarks.md and docs/img/selection.svg.

    .venv/bin/python bench/selection.py            # the full run: 6 strategies x 3 seeds x 2 data sets
    .venv/bin/python bench/selection.py --quick    # a smoke run: 300 pairs a file, 2 seeds, batches of 25

Every split is by prompt (no prompt in both parts) and seeded: pool 80%, test 20%. The reward model takes the cheap
retraining path that a 2-core CPU allows: a frozen backbone (the default all-MiniLM-L6-v2, or `--backbone DIR`)
reads every (prompt, response) text once, as the reward model reads it (training.ml.data.encode), its last token
states mean-pooled; the vectors are cached on disk (var/bench-selection/, keyed by backbone, max length and the
texts), so a second run skips the backbone. The reward model is then a Bradley-Terry linear head on the pair feature
x = phi(B) - phi(A), fitted by L-BFGS in a fraction of a second, which makes 6 x 3 x 2 learning curves affordable;
its L2 penalty is chosen once per seed by cross-validation over the pool's labels (the same for every strategy).
On a GPU (used when present, or `--device cuda`), `--backbone DIR` runs the same bench with a larger backbone (bf16).
"""

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from scipy.optimize import minimize  # type: ignore[import-untyped]  # scipy has no stubs here
from scipy.special import expit  # type: ignore[import-untyped]

from bench.common import ROOT, machine, write_section
from bench.synergy import HH_FILE, PANDALM_FILE, Dataset, load_hh, load_pandalm, subset
from training.ml.config import default_backbone
from training.ml.data import encode
from training.ml.selection import STRATEGIES, STRATEGY_LABELS, Labelled, Pool, required_inputs, select

SECTION = "Selective annotation"
SVG = ROOT / "docs" / "img" / "selection.svg"
CACHE = ROOT / "var" / "bench-selection"
DATASETS = {"hh": HH_FILE, "pandalm": PANDALM_FILE}
QUICK_PAIRS = 300
TARGET = 0.95  # of the accuracy of training on the whole pool
AIM = 1 / 3  # of the labels random needs to reach the target
L2_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
LOG = print


# ---------------------------------------------------------------- features


@dataclass
class Problem:
    """One data set as the loop sees it. x: (n, d) pair features phi(B) - phi(A), scaled to a mean squared norm of
    1 over the file (labels unused); e: (n, h) L2-normalised phi(A) + phi(B); truth: +1 when the file prefers B;
    prompts: one key per pair, for the split."""

    name: str
    x: np.ndarray
    e: np.ndarray
    truth: np.ndarray
    prompts: list[str]
    embed_seconds: float
    from_cache: bool


def load_problem(key: str, args: argparse.Namespace) -> Problem:
    path = args.data / DATASETS[key]
    # HH's chosen side goes to A or B by a seeded coin; a head without bias is indifferent to it (swapping the
    # sides negates both x and the label), so one coin (seed 0) serves every seed.
    data = load_hh(path, 0) if key == "hh" else load_pandalm(path)
    if args.quick:
        data = subset(data, QUICK_PAIRS, 0)
    phi_a, phi_b, seconds, cached = cached_embeddings(key, data, args)
    x = phi_b - phi_a
    x = x / np.sqrt((x**2).sum(1).mean())  # a mean squared norm of 1, so one penalty grid fits any backbone
    e = phi_a + phi_b
    e = e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-12)
    prompts = [json.dumps(p, sort_keys=True) for p in data.prompts]
    return Problem(data.name, x.astype(np.float64), e.astype(np.float32), data.truth, prompts, seconds, cached)


def cached_embeddings(key: str, data: Dataset, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """phi(A), phi(B) per pair, from the cache when this backbone, max length and set of texts ran before."""
    backbone = str(Path(args.backbone or default_backbone()).resolve())
    texts = hashlib.sha256(json.dumps([data.prompts, data.a, data.b], sort_keys=True).encode()).hexdigest()
    digest = hashlib.sha256(json.dumps([backbone, args.max_length, "mean", texts]).encode()).hexdigest()[:16]
    path = args.cache_dir / f"{key}-{digest}.npz"
    if path.exists():
        saved = np.load(path)
        LOG(f"{data.name}: features read from {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return saved["phi_a"], saved["phi_b"], float(saved["seconds"]), True
    started = time.perf_counter()
    phi = embed([(p, r) for p, a, b in zip(data.prompts, data.a, data.b, strict=True) for r in (a, b)], backbone, args)
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, phi_a=phi[0::2], phi_b=phi[1::2], seconds=seconds)
    return phi[0::2], phi[1::2], seconds, False


def embed(texts: list[tuple[list[dict[str, str]], str]], backbone: str, args: argparse.Namespace) -> np.ndarray:
    """(texts, hidden) L2-normalised mean of the frozen backbone's last token states, each (prompt, response)
    tokenised as the reward model reads it; longest first in batches, put back in order."""
    from transformers import AutoModel, AutoTokenizer

    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    if tokenizer.pad_token is None:  # a decoder: padding is masked out of the mean, any token will do
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModel.from_pretrained(backbone, use_safetensors=True, dtype=dtype).to(device).eval()
    ids = [encode(tokenizer, prompt, response, args.max_length) for prompt, response in texts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]["input_ids"]))
    out = np.zeros((len(ids), int(model.config.hidden_size)), dtype=np.float32)
    started, reported = time.perf_counter(), 0
    with torch.inference_mode():
        for start in range(0, len(order), args.embed_batch):
            chunk = order[start : start + args.embed_batch]
            batch = tokenizer.pad([ids[i] for i in chunk], padding="longest", return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out[chunk] = torch.nn.functional.normalize(mean, dim=1).cpu().numpy()
            if start + len(chunk) >= reported + len(order) / 5:
                reported = start + len(chunk)
                LOG(f"  embedded {reported}/{len(order)} texts, {time.perf_counter() - started:.0f} s")
    lengths = np.array([len(i["input_ids"]) for i in ids])
    LOG(f"  mean {lengths.mean():.0f} tokens, {100 * (lengths >= args.max_length).mean():.0f}% cut")
    return out


# ---------------------------------------------------------------- model


def fit_head(x: np.ndarray, signs: np.ndarray, l2: float) -> np.ndarray:
    """Bradley-Terry linear head without bias, P(B preferred) = sigmoid(w . x): the summed log loss plus
    l2/2 |w|^2 (the penalty weighs more when few labels are in), minimised by L-BFGS."""

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = signs * (x @ w)
        gradient = -(x.T @ (signs * expit(-z))) + l2 * w
        return float(np.logaddexp(0.0, -z).sum() + 0.5 * l2 * w @ w), gradient

    return minimize(objective, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x


def bootstrap_heads(x: np.ndarray, signs: np.ndarray, l2: float, members: int, rng: np.random.Generator) -> np.ndarray:
    """(members, d): heads fitted on bootstrap resamples of the labelled pairs, for disagreement."""
    rows = [rng.integers(0, len(x), len(x)) for _ in range(members)]
    return np.stack([fit_head(x[r], signs[r], l2) for r in rows])


def choose_l2(p: Problem, pool: np.ndarray, seed: int, folds: int = 5) -> float:
    """The penalty of least held-out log loss in a cross-validation by prompt over the pool's labels. Every
    strategy of a seed uses it, so it favours none, though a campaign with 50 labels would not know it."""
    keys = sorted({p.prompts[i] for i in pool})
    random.Random(seed).shuffle(keys)
    fold_of = {key: j % folds for j, key in enumerate(keys)}
    fold = np.array([fold_of[p.prompts[i]] for i in pool])
    losses = []
    for l2 in L2_GRID:
        loss = 0.0
        for f in range(folds):
            train, held = pool[fold != f], pool[fold == f]
            w = fit_head(p.x[train], p.truth[train], l2)
            loss += float(np.logaddexp(0.0, -(p.x[held] @ w) * p.truth[held]).sum())
        losses.append(loss / len(pool))
    return L2_GRID[int(np.argmin(losses))]


def accuracy(w: np.ndarray, p: Problem, pairs: np.ndarray) -> float:
    return float(((p.x[pairs] @ w) * p.truth[pairs] > 0).mean())


# ---------------------------------------------------------------- experiment


@dataclass
class Split:
    """One seed's pair indices: pool (to label from), test (held out), the initial random labels (from the pool);
    and the head's L2 penalty for this seed."""

    pool: np.ndarray
    test: np.ndarray
    initial: np.ndarray
    l2: float


def split_by_prompt(prompts: list[str], seed: int, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test pair indices, sharing no prompt: prompts shuffled with the seed, taken for test until the
    share is reached (bench/synergy.py's split)."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    pool: list[int] = []
    test: list[int] = []
    for key in keys:
        (test if len(test) < test_share * len(prompts) else pool).extend(groups[key])
    return np.array(sorted(pool), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


def select_batch(
    p: Problem,
    split: Split,
    strategy: str,
    labelled: np.ndarray,
    w: np.ndarray,
    k: int,
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> np.ndarray:
    """What the strategy sees of the unlabelled candidates and of the labelled pairs, and its k picks (pair
    indices). Bootstrap heads are fitted only for strategies that read member margins."""
    candidates = np.setdiff1d(split.pool, labelled)
    members = None
    if "member_margins" in required_inputs(strategy):
        heads = bootstrap_heads(p.x[labelled], p.truth[labelled], split.l2, args.members, rng)
        members = p.x[candidates] @ heads.T
    pool = Pool(
        size=len(candidates),
        margins=p.x[candidates] @ w,
        member_margins=members,
        features=p.x[candidates],
        embeddings=p.e[candidates],
    )
    known = Labelled(
        features=p.x[labelled], margins=p.x[labelled] @ w, embeddings=p.e[labelled], signs=p.truth[labelled]
    )
    picks = np.asarray(select(strategy, pool, k, rng=rng, labelled=known, random_share=args.random_share))
    if len(picks) != k or len(np.unique(picks)) != k or picks.min() < 0 or picks.max() >= len(candidates):
        raise RuntimeError(f"{strategy} returned {len(picks)} picks for k={k}, not k distinct candidate indices")
    return candidates[picks]


def learning_curve(p: Problem, split: Split, strategy: str, seed: int, args: argparse.Namespace) -> dict:
    """Labels and test accuracy at every step, from the initial labels to half the pool in batches."""
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    labelled, budget = split.initial.copy(), len(split.pool) // 2
    labels, accuracies, select_seconds = [], [], 0.0
    started = time.perf_counter()
    while True:
        w = fit_head(p.x[labelled], p.truth[labelled], split.l2)
        labels.append(len(labelled))
        accuracies.append(accuracy(w, p, split.test))
        if len(labelled) >= budget:
            break
        t0 = time.perf_counter()
        picks = select_batch(p, split, strategy, labelled, w, min(args.batch, budget - len(labelled)), rng, args)
        select_seconds += time.perf_counter() - t0
        labelled = np.concatenate([labelled, picks])
    seconds = time.perf_counter() - started
    LOG(
        f"  seed {seed} {strategy}: {labels[0]} -> {labels[-1]} labels, accuracy {accuracies[0]:.3f} -> "
        f"{accuracies[-1]:.3f} (best {max(accuracies):.3f}), {seconds:.1f} s ({select_seconds:.1f} s selecting)"
    )
    return {"labels": labels, "accuracy": accuracies, "seconds": seconds, "select_seconds": select_seconds}


def run_dataset(p: Problem, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    seeds = []
    for seed in range(args.seeds):
        pool, test = split_by_prompt(p.prompts, seed, 0.2)
        # The same initial labels for every strategy within a seed.
        initial = np.random.default_rng([seed, 10_000]).choice(pool, args.initial, replace=False)
        split = Split(pool, test, initial, args.l2 or choose_l2(p, pool, seed))
        full = accuracy(fit_head(p.x[pool], p.truth[pool], split.l2), p, test)
        LOG(
            f"{p.name} seed {seed}: pool {len(pool)}, test {len(test)}, L2 {split.l2:g}, whole-pool accuracy "
            f"{full:.3f} (target {TARGET * full:.3f})"
        )
        curves = {s: learning_curve(p, split, s, seed, args) for s in args.strategies}
        seeds.append(
            {"seed": seed, "pool": len(pool), "test": len(test), "l2": split.l2, "full": full, "curves": curves}
        )
    return {
        "name": p.name,
        "pairs": len(p.truth),
        "dim": int(p.x.shape[1]),
        "embed_seconds": p.embed_seconds,
        "from_cache": p.from_cache,
        "seconds": time.perf_counter() - started,
        "seeds": seeds,
    }


# ---------------------------------------------------------------- figures


def reached(curve: dict, target: float) -> int | None:
    """The labels at the first step whose test accuracy reaches the target; None within the budget."""
    return next((n for n, a in zip(curve["labels"], curve["accuracy"], strict=True) if a >= target), None)


def area(curve: dict) -> float:
    """Area under accuracy against labels (trapezoids), from the initial labels to the budget."""
    return float(np.trapezoid(curve["accuracy"], curve["labels"]))


def summarise(r: dict, strategy: str) -> dict:
    """Per seed: area relative to random's (same seed), labels to the target, final accuracy; then over seeds."""
    seeds = r["seeds"]
    ratios = [area(s["curves"][strategy]) / area(s["curves"]["random"]) for s in seeds]
    needs = [reached(s["curves"][strategy], TARGET * s["full"]) for s in seeds]
    finals = [s["curves"][strategy]["accuracy"][-1] for s in seeds]
    hit = [n for n in needs if n is not None]
    return {
        "ratio": statistics.mean(ratios),
        "ratio_sd": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "ratio_range": (min(ratios), max(ratios)),
        "needs": needs,
        "need": statistics.mean(hit) if len(hit) == len(needs) else None,
        "hit": len(hit),
        "final": statistics.mean(finals),
        "final_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
    }


def aim_met(r: dict, strategy: str) -> bool:
    """At most a third of random's labels to the target; where random never reaches it within half the pool,
    a third of half the pool."""
    mine, theirs = summarise(r, strategy), summarise(r, "random")
    if mine["need"] is None:
        return False
    budget = min(s["pool"] // 2 for s in r["seeds"])
    return mine["need"] <= AIM * (theirs["need"] if theirs["need"] is not None else budget)


# ---------------------------------------------------------------- run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--datasets", default="hh,pandalm", help="Comma-separated: hh, pandalm.")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="Comma-separated; random always runs.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds 0..N-1: split, initial labels, strategies.")
    parser.add_argument("--initial", type=int, default=50, help="Random labelled pairs to start from.")
    parser.add_argument("--batch", type=int, default=50, help="Labels added between retrainings.")
    parser.add_argument("--random-share", type=float, default=0.0, help="select()'s random_share (0: pure).")
    parser.add_argument("--members", type=int, default=5, help="Bootstrap heads for disagreement.")
    parser.add_argument(
        "--l2", type=float, default=0.0, help="The head's L2 penalty on the summed log loss; 0: chosen per seed."
    )
    parser.add_argument("--backbone", default="", help="A local checkpoint directory; default: default_backbone().")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Where the backbone runs."
    )
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--embed-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the backbone.")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--quick", action="store_true", help="300 pairs a file, 2 seeds, batches of 25: a smoke run.")
    parser.add_argument("--no-write", action="store_true", help="Print the section; leave docs/ alone.")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.initial, args.batch = 2, 25, 25
    chosen = args.strategies.split(",")
    unknown = set(chosen) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; known: {', '.join(STRATEGIES)}")
    args.strategies = ["random", *[s for s in STRATEGIES if s in chosen and s != "random"]]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = [run_dataset(load_problem(key, args), args) for key in args.datasets.split(",")]
    seconds = time.perf_counter() - started
    out = Path(tempfile.gettempdir()) / ("selection_quick.json" if args.quick else "selection_results.json")
    out.write_text(json.dumps({"results": results, "seconds": seconds, "argv": sys.argv[1:]}, indent=1))
    LOG(f"done in {seconds:.0f} s; results in {out}")
    body = report(results, args, seconds)
    print(body)
    if not args.no_write and not args.quick:
        SVG.parent.mkdir(parents=True, exist_ok=True)
        SVG.write_text(plot(results, args.strategies))
        write_section(SECTION, body)


# ---------------------------------------------------------------- report


def _need(s: dict, seeds: int) -> str:
    if s["need"] is not None:
        return f"{s['need']:.0f}"
    if s["hit"] == 0:
        return "not reached"
    return f"not reached in {seeds - s['hit']} of {seeds} seeds"


def _share(mine: dict, theirs: dict, budget: int) -> str:
    if mine["need"] is None:
        return "n/a"
    if theirs["need"] is None:
        return f"< {mine['need'] / budget:.2f} (random: not reached)"
    return f"{mine['need'] / theirs['need']:.2f}"


def dataset_lines(r: dict, strategies: list[str]) -> list[str]:
    seeds = r["seeds"]
    budget = min(s["pool"] // 2 for s in seeds)
    fulls = [s["full"] for s in seeds]
    lines = [
        f"### {r['name']}",
        "",
        f"{r['pairs']} pairs; per seed a pool of {_span([s['pool'] for s in seeds])} and "
        f"{_span([s['test'] for s in seeds])} test pairs; labels from "
        f"{seeds[0]['curves']['random']['labels'][0]} up to half the pool ({budget}+). Whole-pool accuracy "
        f"{_mean_sd(fulls)}; target 95% of it, {_mean_sd([TARGET * f for f in fulls])}.",
        "",
        "| strategy | area under the curve / random's | labels to 95% of whole-pool accuracy | share of random's "
        "labels | accuracy at half the pool |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = summarise(r, "random")
    for strategy in strategies:
        s = summarise(r, strategy)
        lo, hi = s["ratio_range"]
        per_seed = ", ".join("-" if n is None else str(n) for n in s["needs"])
        lines.append(
            f"| {STRATEGY_LABELS.get(strategy, strategy)} | {s['ratio']:.3f} ± {s['ratio_sd']:.3f} "
            f"({lo:.3f}-{hi:.3f}) | {_need(s, len(seeds))} ({per_seed}) "
            f"| {_share(s, base, budget)} | {100 * s['final']:.1f}% ± {100 * s['final_sd']:.1f} |"
        )
    return [*lines, ""]


def _span(values: list[int]) -> str:
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f}% ± {100 * sd:.1f}"


def report(results: list[dict], args: argparse.Namespace, seconds: float) -> str:
    command = ".venv/bin/python bench/selection.py" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:]))
    lines = [intro_paragraph(args), ""]
    for r in results:
        lines += dataset_lines(r, args.strategies)
    lines += [
        "Area: trapezoids under test accuracy against labels, from the initial labels to half the pool, divided by "
        "random's on the same seed (mean ± sd over seeds, range in brackets). Labels to 95%: the first step whose "
        "test accuracy reaches 95% of that seed's whole-pool accuracy (mean over seeds; per seed in brackets, - "
        "for not reached); share: that mean over random's. Accuracy at half the pool: mean ± sd over seeds, in points.",
        "",
        aim_paragraph(results, args.strategies),
        "",
        reading_paragraph(results, args.strategies),
        "",
        "![Test accuracy against labels per strategy: mean over seeds, band from min to max](img/selection.svg)",
        "",
        f"Command: `{command}`; {seconds / 60:.1f} minutes on {machine()}, {args.threads} torch thread(s), "
        f"{args.device}. " + _time_sentence(results),
        "",
        settings_paragraph(results, args),
    ]
    return "\n".join(lines)


def intro_paragraph(args: argparse.Namespace) -> str:
    return (
        "A simulated annotator (the file's own label answers each query) on HH-RLHF harmless-base and the PandaLM "
        f"test set. Per seed ({', '.join(str(s) for s in range(args.seeds))}) the pairs are split by prompt into a "
        f"pool (80%) and a test set (20%); every strategy starts from the same {args.initial} random labelled pool "
        f"pairs and asks `training.ml.selection.select` for batches of {args.batch} up to half the pool, the reward "
        "model refitted after each batch and scored on the test pairs. The target is 95% of the test accuracy of the "
        "same model trained on all the pool's labels (same seed). The model is the cheap retraining path described "
        "under the tables: a linear head on cached features of a frozen backbone, not a fine-tuned reward model."
    )


def _time_sentence(results: list[dict]) -> str:
    parts = []
    for r in results:
        embedding = (
            f"the features read from the cache (computing them took {r['embed_seconds']:.0f} s)"
            if r["from_cache"]
            else f"{r['embed_seconds']:.0f} s computing the features"
        )
        parts.append(f"{r['name']}: {embedding}, {r['seconds']:.0f} s for penalties, whole-pool models and curves")
    return "; ".join(parts) + "."


def aim_paragraph(results: list[dict], strategies: list[str]) -> str:
    parts = []
    for r in results:
        budget = min(s["pool"] // 2 for s in r["seeds"])
        base = summarise(r, "random")["need"]
        met = [STRATEGY_LABELS.get(s, s) for s in strategies if s != "random" and aim_met(r, s)]
        needs = {s: summarise(r, s)["need"] for s in strategies if s != "random"}
        reached_all = {s: n for s, n in needs.items() if n is not None}
        best = min(reached_all, key=lambda s: reached_all[s]) if reached_all else None
        limit = AIM * (base if base is not None else budget)
        text = f"{r['name']}: random needs {'more than half the pool' if base is None else f'{base:.0f} labels'}, "
        text += f"so the aim allows {limit:.0f}; "
        if met:
            text += f"met by {', '.join(met)}."
        elif best is not None:
            text += (
                f"not met: the fewest is {STRATEGY_LABELS.get(best, best)}'s {reached_all[best]:.0f} "
                f"({_share(summarise(r, best), summarise(r, 'random'), budget)} of random's)."
            )
        else:
            text += "not met: no strategy reaches the target on every seed."
        first = r["seeds"][0]["curves"]["random"]["labels"][:2]
        if not met and len(first) == 2 and limit < first[1]:
            text += (
                f" A strategy's own picks first count at {first[1]} labels, so with these steps none could meet it "
                f"here: the only smaller count, {first[0]}, is the start every strategy shares with random."
            )
        parts.append(text)
    verdict = (
        "met on some data" if any(aim_met(r, s) for r in results for s in strategies if s != "random") else "not met"
    )
    return (
        f"Against the aim (95% of whole-pool accuracy with at most a third of the labels random needs): {verdict}. "
        + " ".join(parts)
    )


def reading_paragraph(results: list[dict], strategies: list[str]) -> str:
    """What the figures can and cannot say: how flat the curves are and how noisy a crossing of the target is."""
    parts = []
    for r in results:
        seeds = r["seeds"]
        start = statistics.mean(s["curves"]["random"]["accuracy"][0] for s in seeds)
        end = statistics.mean(s["curves"]["random"]["accuracy"][-1] for s in seeds)
        full = statistics.mean(s["full"] for s in seeds)
        n = statistics.mean(s["test"] for s in seeds)
        se = (full * (1 - full) / n) ** 0.5
        needs = [x for x in summarise(r, "random")["needs"] if x is not None]
        above = [
            STRATEGY_LABELS.get(s, s) for s in strategies if s != "random" and summarise(r, s)["ratio_range"][0] > 1
        ]
        parts.append(
            f"{r['name']}: random goes from {100 * start:.1f}% at {seeds[0]['curves']['random']['labels'][0]} labels "
            f"to {100 * end:.1f}% at half the pool, against {100 * full:.1f}% on the whole pool, so the target sits "
            f"{100 * (TARGET * full - start):.1f} points above the start, {(TARGET * full - start) / se:.1f} standard "
            f"errors of one test accuracy ({100 * se:.1f} points on {n:.0f} test pairs); random's own need ranges over "
            + (f"{min(needs)}-{max(needs)} labels across seeds" if needs else "no seed")
            + ". Area above random's on every seed: "
            + (", ".join(above) if above else "no strategy")
            + "."
        )
    return (
        "Reading. "
        + " ".join(parts)
        + " A crossing of the target is one noisy test accuracy passing a line no more than about one standard "
        "error above the start, so the labels-to-target figures differ between seeds by hundreds of labels and three "
        "seeds cannot rank strategies by them; the areas, which average every step, are the steadier comparison. The "
        "head saturates early, which leaves little room for any strategy to save labels: these figures speak for "
        "this model only."
    )


def settings_paragraph(results: list[dict], args: argparse.Namespace) -> str:
    backbone = args.backbone or "the default backbone (all-MiniLM-L6-v2 from `default_backbone()`, 22M parameters)"
    penalties = "; ".join(r["name"] + " " + ", ".join(f"{s['l2']:g}" for s in r["seeds"]) for r in results)
    penalty = (
        f"{args.l2:g}"
        if args.l2
        else f"chosen per seed from {', '.join(f'{v:g}' for v in L2_GRID)} by 5-fold cross-validation by prompt "
        f"over the pool's labels, least held-out log loss (chosen, seeds in order: {penalties}; the same for every "
        "strategy, though a campaign holding 50 labels could not know it)"
    )
    return (
        f"Cheap retraining path, traded for the 2-core CPU: {backbone} runs once, frozen, over every (prompt, "
        f"response) text as the reward model reads it (`training.ml.data.encode`, max length {args.max_length}), "
        "its last token states mean-pooled and L2-normalised into phi; the vectors are cached in var/bench-selection/ "
        "(keyed by backbone, max length and texts). The reward model is a Bradley-Terry linear head without bias on "
        "x = phi(B) - phi(A), scaled to a mean squared norm of 1 over the file (labels unused): P(B preferred) = "
        "sigmoid(w . x), summed log loss + L2/2 |w|^2, fitted from scratch by L-BFGS (scipy) at every step; L2 "
        f"{penalty}. The strategies (random_share {args.random_share:g}) see, for the unlabelled pool and the "
        f"labelled pairs (with their labels): the refitted head's margins w . x, {args.members} heads fitted on "
        "bootstrap resamples of the labelled pairs (disagreement's member margins, fitted only for it), the features "
        "x (fisher) and the L2-normalised phi(A) + phi(B) as the pair's embedding (coverage, errors). HH's chosen "
        "response goes to A or B by a seeded coin (seed 0), which a head without bias ignores. On a GPU (used when "
        "present), `--backbone DIR` runs the same bench with a larger backbone (bf16) and the same head."
    )


# ---------------------------------------------------------------- plot


COLOURS = {
    "random": "#7f7f7f",
    "disagreement": "#1f77b4",
    "uncertainty": "#ff7f0e",
    "fisher": "#2ca02c",
    "coverage": "#d62728",
    "errors": "#9467bd",
}
PANEL_W, PANEL_H, ROW_TITLE = 230, 200, 24
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 26, 36
Scale = Callable[[float], float]


def plot(results: list[dict], strategies: list[str]) -> str:
    """A hand-written SVG (matplotlib is not in the environment): a row per data set, a panel per strategy, each
    with random's curve for comparison. Lines: test accuracy against labels, mean over seeds; pale bands: the seeds'
    min to max; dotted: whole-pool accuracy, dashed: 95% of it (means over seeds)."""
    others = [s for s in strategies if s != "random"] or ["random"]
    width, row = PANEL_W * len(others), ROW_TITLE + PANEL_H
    parts = []
    for k, r in enumerate(results):
        title = f"{r['name']}: test accuracy against labelled pairs ({len(r['seeds'])} seeds)"
        parts.append(f'<text x="{width / 2}" y="{k * row + 17}" text-anchor="middle" font-weight="bold">{title}</text>')
        values = [a for s in r["seeds"] for c in s["curves"].values() for a in c["accuracy"]]
        values += [s["full"] for s in r["seeds"]]
        lo, hi = np.floor(min(values) * 40) / 40, np.ceil(max(values) * 40) / 40
        for j, strategy in enumerate(others):
            parts += _panel(r, strategy, (j * PANEL_W, k * row + ROW_TITLE), (lo, hi))
    y = len(results) * row + 6
    parts += [
        f'<line x1="{LEFT}" x2="{LEFT + 24}" y1="{y + 5}" y2="{y + 5}" stroke="{COLOURS["random"]}" stroke-width="2"/>',
        f'<text x="{LEFT + 30}" y="{y + 9}">random (in every panel)</text>',
        f'<line x1="{LEFT + 200}" x2="{LEFT + 224}" y1="{y + 5}" y2="{y + 5}" stroke="#000" stroke-dasharray="2 3"/>',
        f'<text x="{LEFT + 230}" y="{y + 9}">whole-pool accuracy</text>',
        f'<line x1="{LEFT + 380}" x2="{LEFT + 404}" y1="{y + 5}" y2="{y + 5}" stroke="#000" stroke-dasharray="6 4"/>',
        f'<text x="{LEFT + 410}" y="{y + 9}">95% of it (the target)</text>',
        f'<text x="{LEFT + 580}" y="{y + 9}">bands: min to max over seeds</text>',
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 20}" '
        'font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(parts)
        + "\n</svg>\n"
    )


def _panel(r: dict, strategy: str, origin: tuple[int, int], bounds: tuple[float, float]) -> list[str]:
    seeds, (x0, y0), (lo, hi) = r["seeds"], origin, bounds
    steps = min(len(s["curves"]["random"]["labels"]) for s in seeds)
    labels = [statistics.mean(s["curves"]["random"]["labels"][i] for s in seeds) for i in range(steps)]
    box = (x0 + LEFT, x0 + PANEL_W - RIGHT, y0 + TOP, y0 + PANEL_H - BOTTOM)
    left, right, top, bottom = box

    def px(n: float) -> float:
        return left + (right - left) * (n - labels[0]) / max(labels[-1] - labels[0], 1)

    def py(a: float) -> float:
        return bottom - (bottom - top) * (a - lo) / (hi - lo)

    colour = COLOURS.get(strategy, "#000")
    name = STRATEGY_LABELS.get(strategy, strategy)
    parts = [f'<text x="{(left + right) / 2}" y="{y0 + 16}" text-anchor="middle" fill="{colour}">{name}</text>']
    parts += _grid(lo, hi, labels, px, py, box)
    full = statistics.mean(s["full"] for s in seeds)
    for value, dash in ((full, "2 3"), (TARGET * full, "6 4")):
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{py(value):.1f}" y2="{py(value):.1f}" stroke="#000" '
            f'stroke-dasharray="{dash}"/>'
        )
    for key in dict.fromkeys(("random", strategy)):
        rows = np.array([s["curves"][key]["accuracy"][:steps] for s in seeds])
        tint = COLOURS.get(key, "#000")
        band = [(px(n), py(v)) for n, v in zip(labels, rows.max(0), strict=True)]
        band += [(px(n), py(v)) for n, v in reversed(list(zip(labels, rows.min(0), strict=True)))]
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in band)
        parts.append(f'<polygon points="{points}" fill="{tint}" fill-opacity="0.15" stroke="none"/>')
        line = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in zip(labels, rows.mean(0), strict=True))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{tint}" stroke-width="2"/>')
    return parts


def _grid(lo: float, hi: float, labels: list[float], px: Scale, py: Scale, box: tuple[int, ...]) -> list[str]:
    """A frame, accuracy gridlines every 2.5 or 5 points, label ticks at round numbers."""
    left, right, top, bottom = box
    parts = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#bbb"/>']
    step = 0.025 if hi - lo <= 0.2 else 0.05
    for k in range(round((hi - lo) / step) + 1):
        v = lo + k * step
        parts.append(f'<line x1="{left}" x2="{right}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="10">{100 * v:g}%</text>')
    span = labels[-1] - labels[0]
    every = next(t for t in (25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10**9) if span / t <= 5)
    ticks = [labels[0]] + [t for t in range(every, int(labels[-1]) + 1, every) if t - labels[0] >= 0.12 * span]
    for n in ticks:
        parts.append(f'<text x="{px(n):.1f}" y="{bottom + 14}" text-anchor="middle" font-size="10">{n:.0f}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{bottom + 28}" text-anchor="middle" font-size="10">labels</text>')
    return parts


if __name__ == "__main__":
    main()
