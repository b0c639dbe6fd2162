"""The recommenders engineers pick today, each from its maintained library, as evaluation peers.

One small adapter per model behind the ``Baseline`` interface of ``baselines.py``:
``fit`` takes the training matrix and ``score`` a history matrix (users x catalog
items), both from ``Catalog.matrix(..., ordered=True)``: an entry is the item's
position in the user's history, which the sequential models read as the order
and the others binarise. The harness picks the top K with the same exclusions as
every other method (``baselines.recommend``).

- ``implicit_als``: ``implicit``'s ALS (confidence ``alpha`` per interaction);
  users are folded in with the library's ``recalculate_user``.
- ``implicit_bpr``: ``implicit``'s BPR. It keeps one trained vector per user and
  has no fold-in, so it scores only users it was trained on, with their full
  training history: it gets no ``cold_*`` metrics.
- ``ease``: ``cornac``'s EASE (closed form item-item weights ``B``); score = history x B.
- ``sasrec`` / ``bert4rec``: ``cornac``'s transformers over each user's history in
  time order (one session per user); scored by the library's ``score`` from the
  history given. ``rectools`` also has them but requires numpy < 2 on Python 3.11.
- ``bivae``: ``cornac``'s BiVAE (the VAE of the Microsoft Recommenders table); a
  history is folded in through the trained user encoder, which is how the library
  computes its own user means after training.

Every library import happens inside the adapters: a missing library costs one log
line (``available``), never an import error. Threads: each fit and score runs
under ``threads`` (torch, BLAS/OpenMP pools, ``implicit``'s ``num_threads``).
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from interestlake.evaluation.baselines import Baseline, Catalog

log = logging.getLogger("interestlake")
INSTALL = "pip install -e '.[peers]'"


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Runs the block with ``count`` threads in torch and in the native BLAS/OpenMP pools."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(before)


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.tocsr(copy=True).astype(np.float32)
    out.data[:] = 1.0
    return out


def _sequences(matrix: sp.csr_matrix) -> list[list[int]]:
    """Each row's item indices in history order (the entries are positions)."""
    matrix = matrix.tocsr()
    out = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        order = np.argsort(matrix.data[start:end], kind="stable")
        out.append(matrix.indices[start:end][order].tolist())
    return out


def _identity_map(count: int) -> OrderedDict:
    return OrderedDict((index, index) for index in range(count))


class Peer(Baseline):
    """A peer model: the library's model configured from one grid point.

    Attributes:
        folds_in: Scores any history given (False: only the users it was trained on,
            in training order, so no cold metrics).
    """

    library = ""
    folds_in = True

    def __init__(self, params: dict[str, Any], seed: int, thread_count: int, trained_users: pd.Index):
        """Args:
            params: The library model's keyword arguments (one grid point).
            seed: Seed of the model's initialisation and sampling.
            thread_count: Threads of its fit and scoring.
            trained_users: User ids of the training matrix's rows.
        """
        self.hyper = dict(params)
        self.seed = seed
        self.thread_count = thread_count
        self.trained_users = trained_users

    def params(self) -> dict[str, Any]:
        return dict(self.hyper)


class ImplicitALS(Peer):
    """``implicit.cpu.als.AlternatingLeastSquares``; histories folded in by ``recalculate_user``."""

    name = "implicit_als"
    library = "implicit"

    def fit(self, train: sp.csr_matrix) -> ImplicitALS:
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit parallelises over users itself; a multi-threaded BLAS under it only competes.
        with threads(1):
            self.model = AlternatingLeastSquares(**self.hyper, random_state=self.seed, num_threads=self.thread_count)
            self.model.fit(_binary(train), show_progress=False)
        return self

    def user_vectors(self, history: sp.csr_matrix) -> np.ndarray:
        with threads(1):
            return self.model.recalculate_user(np.arange(history.shape[0]), _binary(history))

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        return self.user_vectors(history) @ self.model.item_factors.T


class ImplicitBPR(Peer):
    """``implicit.cpu.bpr.BayesianPersonalizedRanking``; scores the users it was trained on."""

    name = "implicit_bpr"
    library = "implicit"
    folds_in = False

    def fit(self, train: sp.csr_matrix) -> ImplicitBPR:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        with threads(1):
            self.model = BayesianPersonalizedRanking(
                **self.hyper, random_state=self.seed, num_threads=self.thread_count
            )
            self.model.fit(_binary(train), show_progress=False)
        return self

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        rows = self.trained_users.get_indexer(pd.Index(list(users), dtype=object))
        if (rows < 0).any():
            raise ValueError("implicit_bpr scores only users it was trained on (it has no fold-in)")
        return self.model.user_factors[rows] @ self.model.item_factors.T


def _cornac_dataset(train: sp.csr_matrix):
    """A cornac Dataset whose user and item indices are the matrix's rows and columns."""
    from cornac.data import Dataset

    coo = _binary(train).tocoo()
    triples = list(zip(coo.row.tolist(), coo.col.tolist(), coo.data.astype(float).tolist()))
    return Dataset.build(triples, fmt="UIR", global_uid_map=_identity_map(train.shape[0]),
                         global_iid_map=_identity_map(train.shape[1]), seed=None)


class EASE(Peer):
    """``cornac.models.EASE``: item-item weights in closed form; a user's scores are history x B."""

    name = "ease"
    library = "cornac"

    def fit(self, train: sp.csr_matrix) -> EASE:
        from cornac.models import EASE as CornacEASE

        with threads(self.thread_count):
            self.model = CornacEASE(**self.hyper, verbose=False, seed=self.seed).fit(_cornac_dataset(train))
        return self

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        with threads(self.thread_count):
            return np.asarray(_binary(history) @ self.model.B)


class BiVAE(Peer):
    """``cornac.models.BiVAECF``; a history is folded in through the trained user encoder."""

    name = "bivae"
    library = "cornac"

    def fit(self, train: sp.csr_matrix) -> BiVAE:
        from cornac.models import BiVAECF

        with threads(self.thread_count):
            self.model = BiVAECF(**self.hyper, seed=self.seed, use_gpu=False, verbose=False)
            self.model.fit(_cornac_dataset(train))
        return self

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        import torch

        bivae = self.model.bivae
        with threads(self.thread_count), torch.no_grad():
            # The same steps the library's training ends with to fix each user's mean.
            mean, _ = bivae.encode_user(torch.tensor(_binary(history).toarray(), dtype=torch.float32))
            return bivae.decode_user(mean, bivae.mu_beta).cpu().numpy()


class Sequential(Peer):
    """A cornac next-item transformer (``SASRec`` or ``BERT4Rec``), one session per user."""

    library = "cornac"
    model_class = ""

    def fit(self, train: sp.csr_matrix) -> Sequential:
        import cornac.models
        from cornac.data import SequentialDataset

        rows = [(user, user, item, step)
                for user, items in enumerate(_sequences(train)) for step, item in enumerate(items)]
        dataset = SequentialDataset.build(
            rows, fmt="USIT", global_uid_map=_identity_map(train.shape[0]),
            global_sid_map=_identity_map(train.shape[0]), global_iid_map=_identity_map(train.shape[1]),
        )
        with threads(self.thread_count):
            self.model = getattr(cornac.models, self.model_class)(**self.hyper, seed=self.seed, verbose=False)
            self.model.fit(dataset)
        return self

    def score(self, history: sp.csr_matrix, users: Sequence[str] | None = None) -> np.ndarray:
        import torch

        with threads(self.thread_count), torch.no_grad():
            return np.stack([np.asarray(self.model.score(None, items), dtype=np.float64).reshape(-1)
                             for items in _sequences(history)])


class SASRec(Sequential):
    name = "sasrec"
    model_class = "SASRec"


class BERT4Rec(Sequential):
    name = "bert4rec"
    model_class = "BERT4Rec"


PEERS: dict[str, type[Peer]] = {cls.name: cls for cls in (SASRec, BERT4Rec, ImplicitALS, ImplicitBPR, EASE, BiVAE)}


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a peer's grid (``evaluation.peers.grids.<name>``)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


def builder(name: str, seed: int, thread_count: int) -> Callable[[dict[str, Any], Catalog], Peer]:
    """A function making the peer ``name`` for one grid point and catalog (what ``baselines.search`` takes)."""
    return lambda point, catalog: PEERS[name](point, seed, thread_count, catalog.users)


def available(names: Sequence[str]) -> list[str]:
    """The peers among ``names`` whose library imports; one log line for each one that does not."""
    usable = []
    for name in names:
        library = PEERS[name].library
        try:
            importlib.import_module(library)
        except ImportError as exc:
            log.warning("evaluate: %s skipped: %s cannot be imported (%s); install the peers with %s",
                        name, library, exc, INSTALL)
            continue
        usable.append(name)
    return usable
