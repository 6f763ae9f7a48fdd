"""Error-driven retrieval for the curation loop: the pairs a reward model gets wrong are queries, and their nearest
unlabelled neighbours (by what the pairs say) are pulled for annotation next, since a model that misjudges one
pair likely misjudges pairs like it.

A pair is embedded as one text (pair_text) by a sentence encoder (PairEncoder: any local checkpoint, mean-pooled
and L2-normalised as sentence-transformers' all-MiniLM-L6-v2 is, so inner product is cosine similarity). The
vectors live in a faiss index keyed by item id (PairIndex), kept on disk between rounds so that only new items are
embedded. A search compares the queries with the candidates the caller allows (unlabelled, not already queued)
and no others, so it stays exact however few are allowed (neighbours), and the pull list takes the worst queries'
neighbours first (retrieve).
"""

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training.ml.data import Prompt, flatten_turns, prompt_with_context
from training.ml.model import check_checkpoint, member_dirs

PROMPT_CHARS = 500
RESPONSE_CHARS = 250
GATHER_ROWS = 65_536  # allowed vectors read back per faiss search: 96 MiB as float32 at 384 dimensions


def pair_text(
    prompt: Prompt,
    context: str,
    response_a: str,
    response_b: str,
    *,
    prompt_chars: int = PROMPT_CHARS,
    response_chars: int = RESPONSE_CHARS,
) -> str:
    """What is embedded for a pair: its prompt as a model reads it (context as a system turn, the turns flattened),
    then both responses, each labelled. Every part is cut to a share of characters first, so that a long context
    or prompt cannot push the responses past the encoder's max_length (about 1,000 characters of English fill
    MiniLM's 256 tokens): the prompt keeps its end, whose last turn matters most (as data.encode cuts it), and each
    response its start."""
    prompt_text = flatten_turns(prompt_with_context(prompt, context))
    if len(prompt_text) > prompt_chars:
        prompt_text = "…" + prompt_text[len(prompt_text) - prompt_chars :]
    return "\n\n".join(
        [prompt_text, f"Response A: {response_a[:response_chars]}", f"Response B: {response_b[:response_chars]}"]
    )


class PairEncoder:
    """A sentence encoder loaded once for many calls: any local Hugging Face checkpoint directory (safetensors
    only), such as the default backbone or a Concord reward model, whose backbone is read without its head (an
    ensemble's member-0 stands for the ensemble: the members share a backbone's pretraining and differ little)."""

    def __init__(self, model_dir: Path | str, *, max_length: int = 256, batch_size: int = 64) -> None:
        path = member_dirs(model_dir)[0]
        check_checkpoint(path)
        self.max_length, self.batch_size = max_length, batch_size
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        if self.tokenizer.pad_token is None:  # a decoder: padding is masked out of the mean, any token will do
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model: PreTrainedModel = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        self.model.to(self.device)
        self.model.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, dim) float32 unit vectors in the texts' order. Texts are run longest first in batches of similar
        length, which pads little, then put back in order."""
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return vectors
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        rows = [{key: values[i] for key, values in encoded.items()} for i in range(len(texts))]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([rows[i] for i in indices], padding="longest", return_tensors="pt")
            vectors[indices] = self._embed({key: value.to(self.device) for key, value in batch.items()})
        return vectors

    def _embed(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Mean of the token states over the attention mask, L2-normalised (sentence-transformers' mean pooling)."""
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1).cpu().numpy()


class PairIndex:
    """Unit vectors keyed by item id, searched by inner product (cosine similarity), exactly.

    faiss keeps the ids itself (IndexIDMap2, which can also give vectors back by id and remove them), over a flat
    index that stores each vector as float16 (IndexScalarQuantizer QT_fp16) by default: half the memory of float32
    (732 MiB rather than 1.4 GiB for a million 384-wide vectors) for similarities within about 1e-4 of
    float32's, which swaps near-ties only: on 2,000 embedded HH-RLHF pairs 99% of the 8-neighbour lists are
    identical to float32's and recall@8 is 99.98% (bench/retrieval.py; tests/training/test_retrieval.py checks
    well-separated neighbours). A search stays exhaustive: there is no clustering to train or retrain as items
    arrive, and restricting a search to a few allowed ids loses nothing (an IVF index would probe only the
    clusters near the query and find too few allowed ones there)."""

    def __init__(self, index: faiss.IndexIDMap2) -> None:
        self.index = index

    @classmethod
    def new(cls, dim: int, *, fp16: bool = True) -> "PairIndex":
        inner: faiss.Index
        if fp16:
            inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            inner = faiss.IndexFlatIP(dim)
        return cls(faiss.IndexIDMap2(inner))

    @classmethod
    def load(cls, path: Path | str) -> "PairIndex":
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path} holds a {type(index).__name__}, not a PairIndex's IndexIDMap2")
        return cls(index)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store vectors under their ids. An id already present gets the new vector (its item was edited, or the
        encoder changed), as does an id given twice: the last vector wins."""
        ids = _ids(ids)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        # np.unique keeps the first of equal ids; reversed, the first is the last given.
        _, last = np.unique(ids[::-1], return_index=True)
        keep = np.sort(len(ids) - 1 - last)
        ids, vectors = ids[keep], vectors[keep]
        present = ids[np.isin(ids, self.ids())]
        if len(present):
            self.index.remove_ids(faiss.IDSelectorBatch(present))
        self.index.add_with_ids(vectors, ids)

    def ids(self) -> np.ndarray:
        """Every id in the index, in the order they were added."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """The given ids that are not in the index, in the given order: the items to embed before a search."""
        ids = _ids(ids)
        return ids[~np.isin(ids, self.ids())]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(ids, dim) the stored vectors (float16 ones widened back to float32). KeyError for an unknown id."""
        ids = _ids(ids)
        absent = self.missing(ids)
        if len(absent):
            raise KeyError(f"not in the index: {absent[:10].tolist()}")
        return self.reconstruct(ids)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """vectors() without its check that every id is present (which sorts all the index's ids): for ids the
        caller took from ids() itself. An unknown id raises faiss's RuntimeError."""
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.index.reconstruct_batch(_ids(ids)), dtype=np.float32)

    def save(self, path: Path | str) -> None:
        """Write the index atomically: to a temporary file beside it, flushed to disk, then renamed over it, so a
        crash or a concurrent reader never sees half an index."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self.index, temporary)
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _ids(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """Ids as faiss takes them: a contiguous int64 vector."""
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def neighbours(
    index: PairIndex, query_ids: np.ndarray, ks: np.ndarray, allowed_ids: np.ndarray
) -> dict[int, np.ndarray]:
    """Each query id's ks[i] nearest neighbours among allowed_ids only, nearest first, never the query itself (an
    empty array for k = 0). The queries must be in the index; allowed ids that are not are never found. Fewer
    than k come back when fewer are allowed.

    Only the allowed vectors are compared at all: they are read back out of the index GATHER_ROWS at a time and
    each slice is searched by faiss (faiss.knn, all the queries at once, at the largest k plus one: room for the
    query itself, dropped after), the slices' results merged by faiss's ResultHeap. Exact, as brute force is.

    Not a search of the index restricted by an ID selector (SearchParameters with an IDSelectorBatch), though
    that reads more naturally: faiss then tests every stored id and decodes every allowed float16 vector again for
    each query, 6.5x slower for 1,000 queries among 100,000 of a million (40.8 s against 6.2 s on two cores:
    docs/benchmarks.md, Retrieval)."""
    query_ids, ks = _ids(query_ids), np.asarray(ks, dtype=np.int64).reshape(-1)
    if len(ks) != len(query_ids):
        raise ValueError(f"{len(query_ids)} query ids but {len(ks)} values of k")
    if (ks < 0).any():
        raise ValueError("k must not be negative")
    found = {int(query): np.zeros(0, dtype=np.int64) for query in query_ids}
    if not len(query_ids) or int(ks.max()) == 0:
        return found
    queries = index.vectors(query_ids)
    allowed_ids = np.unique(_ids(allowed_ids))
    allowed_ids = allowed_ids[np.isin(allowed_ids, index.ids())]
    k = int(ks.max()) + 1
    heap = faiss.ResultHeap(len(query_ids), k, keep_max=True)
    for start in range(0, len(allowed_ids), GATHER_ROWS):
        rows = allowed_ids[start : start + GATHER_ROWS]
        scores, positions = faiss.knn(
            queries, index.reconstruct(rows), min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT
        )
        heap.add_result(scores, np.where(positions >= 0, rows[positions], -1))
    heap.finalize()
    for query, query_k, row in zip(query_ids, ks, heap.I, strict=True):
        found[int(query)] = row[(row != -1) & (row != query)][:query_k].astype(np.int64)
    return found


def retrieve(
    index: PairIndex, query_ids: np.ndarray, ks: np.ndarray, allowed_ids: np.ndarray, *, budget: int
) -> list[tuple[int, int]]:
    """The pull list: (item_id, query_id) for the neighbours of each query in turn, the caller's worst query first,
    each item once (credited to the first, worst, query that found it), at most `budget` items.

    A neighbour already taken by a worse query is not replaced by the next one along: a cluster of errors then
    shares its neighbours rather than each member pulling its own k, and the budget reaches more regions of the
    data. The list can therefore be shorter than the budget; the caller widens ks to fill it."""
    pulled: list[tuple[int, int]] = []
    seen: set[int] = set()
    if budget <= 0:
        return pulled
    found = neighbours(index, query_ids, ks, allowed_ids)
    for query in dict.fromkeys(int(q) for q in _ids(query_ids)):
        for item in found[query].tolist():
            if item in seen:
                continue
            seen.add(item)
            pulled.append((item, query))
            if len(pulled) == budget:
                return pulled
    return pulled
