"""Helpers for benchmark scripts: a database of their own, timing, and writing docs/benchmarks.md."""

import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def django_setup(database: str = "concord_bench") -> None:
    """Point Django at a benchmark database beside the app's own (created and migrated if missing)."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("DATABASE_URL", "postgres://concord@127.0.0.1:55432/concord")
    bench_url = url.rsplit("/", 1)[0] + "/" + database
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "concord.settings.local")
    os.environ["DEBUG"] = "0"  # DEBUG keeps every query in memory and slows the ORM down
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# The words of generated prompts and responses (filler_text): realistic lengths, nothing to learn from.
WORDS = [
    "the",
    "model",
    "answer",
    "should",
    "explain",
    "clearly",
    "why",
    "each",
    "step",
    "follows",
    "from",
    "the",
    "previous",
    "one",
    "and",
]


def filler_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> str:
    return f"p50 {1000 * statistics.median(values):.2f} ms, p95 {1000 * percentile(values, 0.95):.2f} ms"


def machine() -> str:
    cores = os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `## name` of docs/benchmarks.md."""
    text = (
        BENCHMARKS_MD.read_text()
        if BENCHMARKS_MD.exists()
        else "# Benchmarks\n\nFigures written by the scripts in bench/.\n"
    )
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS_MD.write_text(text.rstrip() + "\n")
