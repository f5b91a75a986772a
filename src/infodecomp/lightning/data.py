"""LightningDataModules. Batches are dicts: ``x`` (data), ``cond`` (model conditions), and where
available ``captions``, ``labels`` and ``masks`` (kept for evaluation).

Data modules that know their ground truth expose it through :meth:`ground_truth`: the exact
MI (and CMI) of each conditioning variable and, where one exists, the exact oracle denoiser,
which takes the same conditions as the trained model.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from infodecomp.diffusion.sampling import derive_seed
from infodecomp.interface import Denoiser
from infodecomp.tasks.images import DigitsWorld, PIDWorld, ShapesWorld, TwoObjectShapesWorld
from infodecomp.tasks.natural import NaturalImageWorld, load_cifar10
from infodecomp.tasks.vector import ConditionalTask, get_task

log = logging.getLogger(__name__)


@dataclass
class GroundTruth:
    """What a data module knows exactly.

    Attributes:
        mutual_information: ``{variable: I(x; variable)}`` in nats.
        conditional_mutual_information: ``{variable: I(x; variable | all other variables)}``.
        oracle: exact denoiser taking the model's conditions, or ``None``.
        standard_errors: Monte-Carlo SEs of the values above, where they are estimates.
    """

    mutual_information: dict[str, float] = field(default_factory=dict)
    conditional_mutual_information: dict[str, float] = field(default_factory=dict)
    oracle: Denoiser | None = None
    standard_errors: dict[str, float] = field(default_factory=dict)


class DictDataset(Dataset):
    """Rows of tensors (and optional captions) returned as dicts."""

    def __init__(self, x: Tensor, cond: Mapping[str, Tensor] | None = None, extras: Mapping[str, Tensor] | None = None,
                 captions: Sequence[str] | None = None) -> None:
        self.x, self.cond, self.extras = x, dict(cond or {}), dict(extras or {})
        self.captions = list(captions) if captions is not None else None
        for name, t in {**self.cond, **self.extras}.items():
            if len(t) != len(x):
                raise ValueError(f"{name!r} has {len(t)} rows, x has {len(x)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"x": self.x[i], "cond": {k: v[i] for k, v in self.cond.items()}}
        item.update({k: v[i] for k, v in self.extras.items()})
        if self.captions is not None:
            item["captions"] = self.captions[i]
        return item

    def rows(self, indices: Sequence[int]) -> dict[str, Any]:
        """Items ``indices`` as one batch, by tensor indexing: the same values as
        ``default_collate([self[i] for i in indices])`` without a dict per item."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        rows: dict[str, Any] = {"x": self.x[idx], "cond": {k: v[idx] for k, v in self.cond.items()}}
        rows.update({k: v[idx] for k, v in self.extras.items()})
        if self.captions is not None:
            rows["captions"] = [self.captions[i] for i in idx.tolist()]
        return rows


class _Rows(dict):
    """A batch already collated by :meth:`DictDataset.rows`."""


class _WholeBatches(Dataset):
    """A :class:`DictDataset` whose batches the project's own loaders fetch whole (``torch``'s
    ``__getitems__``), with :func:`collate` as their ``collate_fn``. Item by item, the per-item
    dicts and their collation took a fifth of a :class:`~infodecomp.lightning.estimator.DiffusionMI`
    fit on one CPU thread (12.6 of 67 s, profiled at batch 1024)."""

    def __init__(self, ds: DictDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[i]

    def __getitems__(self, indices: Sequence[int]) -> _Rows:
        return _Rows(self.ds.rows(indices))


def collate(data: Any) -> Any:
    """``collate_fn`` of the data modules' loaders: a batch fetched whole as it is, anything else
    by ``default_collate``."""
    return dict(data) if isinstance(data, _Rows) else default_collate(data)


class EpochSampler(Sampler[int]):
    """Shuffled order that is a pure function of ``(seed, epoch)``, and can start mid-epoch.

    Lightning sets the epoch (``set_epoch``) before each one; :meth:`resume_at` makes the next
    pass over ``epoch`` skip the items a checkpointed run had already consumed, so a resumed run
    sees exactly the batches the uninterrupted one would have.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, items: int) -> None:
        self._resume = (epoch, items)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # noqa: ANN204 - an iterator of indices
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", self.epoch))
        order = torch.randperm(self.n, generator=gen).tolist()
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        return iter(order[start:])


class _BaseDataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._sampler: EpochSampler | None = None
        self._resume: tuple[int, int] | None = None

    def check(self) -> None:
        """Input checks that need no data loading (files exist, settings agree): ``ValueError``
        with one sentence. ``train.py`` calls it before it creates anything."""

    def _loader(self, ds: Dataset | None, shuffle: bool) -> DataLoader:
        if ds is None:
            raise ValueError(f"{type(self).__name__}.setup() has not been called")
        sampler = None
        if shuffle:
            sampler = self._sampler = EpochSampler(len(ds), self.seed)
            if self._resume is not None:
                sampler.resume_at(*self._resume)
                self._resume = None
        data = _WholeBatches(ds) if isinstance(ds, DictDataset) else ds
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          drop_last=shuffle and len(ds) > self.batch_size, persistent_workers=self.num_workers > 0,
                          collate_fn=collate)

    # ---- the data order is part of a checkpoint ------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None:
            return {}
        loop = trainer.fit_loop
        # batches of the current epoch that the loop has taken (prefetched ones are not counted)
        return {"epoch": loop.epoch_progress.current.processed,
                "batches": loop.epoch_loop.batch_progress.current.ready, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or state.get("batch_size") != self.batch_size:
            return
        if self.trainer is not None and self.trainer.world_size > 1:
            log.warning("resuming under data parallelism: the interrupted epoch's data order starts over")
            return
        self._resume = (int(state["epoch"]), int(state["batches"]) * self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def ground_truth(self) -> GroundTruth | None:
        return None

    def condition_entropies(self) -> dict[str, dict[str, float]]:
        """Entropies of the training set's finite conditions (:func:`_entropy`): ``H(v)`` bounds ``I(x; v)``
        and ``H(v | other variables)`` bounds the CMI. Integer labels count; a caption is one
        value of ``text``. Vector conditions have no finite bound and are left out."""
        if self.train_set is None:
            self.setup("fit")
        ds = self.train_set
        columns: dict[str, list] = {}
        for name, values in getattr(ds, "cond", {}).items():
            if not values.is_floating_point() and values.ndim == 1:
                columns[name] = values.tolist()
        if getattr(ds, "captions", None) is not None and "text" in getattr(self, "condition_names", []):
            columns["text"] = list(ds.captions)
        out: dict[str, dict[str, float]] = {"mi": {}, "cmi": {}}
        if not columns:
            return out
        names = list(columns)
        rows = list(zip(*columns.values(), strict=True))
        joint = _entropy(rows)
        for i, name in enumerate(names):
            out["mi"][name] = _entropy(columns[name])
            if len(names) > 1:  # H(v | rest) = H(all) - H(rest)
                out["cmi"][name] = joint - _entropy([r[:i] + r[i + 1 :] for r in rows])
        return out


def _entropy(values: Sequence[Any]) -> float:
    """Entropy (nats) of a list of hashable values: the plug-in estimate with the Miller-Madow
    correction ``(K - 1) / 2n`` for ``K`` distinct values in ``n``. The plug-in alone is biased
    low, which would put a bound on information below the truth (162 captions, 20,000 draws:
    5.084 against log 162 = 5.088)."""
    counts = np.asarray(list(Counter(values).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2 * counts.sum()))


class VectorTaskDataModule(_BaseDataModule):
    """A vector task by id: ``x`` is modelled, ``y`` (and ``c`` for CMI tasks) are conditions.

    Args:
        task: any id of ``python -m infodecomp.tasks --list``.
        n_train, n_val: samples drawn once (fixed seed) for training and validation.
    """

    def __init__(self, task: str = "1v1-normal-0.75", n_train: int = 20000, n_val: int = 2000,
                 batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.task = get_task(task)
        self.n_train, self.n_val = n_train, n_val

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.task.dim_x,)

    @property
    def condition_names(self) -> list[str]:
        return ["y", "c"] if isinstance(self.task, ConditionalTask) else ["y"]

    def _draw(self, n: int, seed: int) -> DictDataset:
        parts = self.task.sample(n, seed=seed)
        return DictDataset(parts[0], dict(zip(self.condition_names, parts[1:], strict=True)))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._draw(self.n_train, self.seed)
            self.val_set = self._draw(self.n_val, self.seed + 1)

    def ground_truth(self) -> GroundTruth:
        if isinstance(self.task, ConditionalTask):
            gt = GroundTruth({"y": self.task.mutual_information}, {"y": self.task.conditional_mutual_information})
        else:
            gt = GroundTruth({"y": self.task.mutual_information})
        if self.task.is_gaussian:
            gt.oracle = self.task.oracle()
        return gt


class TensorDataModule(_BaseDataModule):
    """Your own tensors: ``x`` is modelled, ``cond`` holds vector (float) or label (int) conditions.

    Args:
        train, val: ``(x, {name: values})`` for training and validation (the evaluation
            callbacks read the validation set).
    """

    def __init__(self, train: tuple[Tensor, Mapping[str, Tensor]], val: tuple[Tensor, Mapping[str, Tensor]],
                 batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        (x, cond), (vx, vcond) = train, val
        if set(cond) != set(vcond):
            raise ValueError(f"training and validation conditions differ: {sorted(cond)} and {sorted(vcond)}")
        if tuple(x.shape[1:]) != tuple(vx.shape[1:]):
            raise ValueError(f"training and validation x differ in shape: {tuple(x.shape[1:])} and {tuple(vx.shape[1:])}")
        self.train_set, self.val_set = DictDataset(x, cond), DictDataset(vx, vcond)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_set.x.shape[1:])

    @property
    def condition_names(self) -> list[str]:
        return list(self.train_set.cond)


class _WorldDataModule(_BaseDataModule):
    """Training data drawn from an exactly known image world (a Gaussian mixture)."""

    world: ShapesWorld | TwoObjectShapesWorld | DigitsWorld | PIDWorld | NaturalImageWorld
    text: bool = False

    def __init__(self, n_train: int, n_val: int, batch_size: int, num_workers: int, seed: int,
                 truth_samples: int = 20000) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.n_train, self.n_val, self.truth_samples = n_train, n_val, truth_samples

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.world.image_shape

    @property
    def condition_names(self) -> list[str]:
        return ["text"] if self.text else list(self.world.attributes)

    @property
    def vocabulary(self) -> list[str]:
        return sorted({w for c in self.world.captions for w in c.split()})

    def _draw(self, n: int, seed: int) -> DictDataset:
        b = self.world.sample(n, seed=seed)
        labels = {k: v for k, v in b.labels.items() if k in self.world.attributes}
        extras = {"masks": b.masks, "component": b.labels["component"]}
        if self.text:
            return DictDataset(b.x, {}, {**extras, **{f"label/{k}": v for k, v in labels.items()}}, b.captions)
        return DictDataset(b.x, labels, extras, b.captions)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._draw(self.n_train, self.seed)
            self.val_set = self._draw(self.n_val, self.seed + 1)

    @cached_property
    def _truth(self) -> GroundTruth:
        if self.text:  # a caption is one condition; the exact oracle takes attributes, not text
            mi = self.world.caption_information(n=self.truth_samples, seed=self.seed)
            return GroundTruth({"text": mi.item()}, standard_errors={"mi/text": float(mi.se)})
        gt = GroundTruth(oracle=self.world.oracle())
        attrs = list(self.world.attributes)
        for a in attrs:
            mi = self.world.mutual_information(a, n=self.truth_samples, seed=self.seed)
            gt.mutual_information[a] = mi.item()
            gt.standard_errors[f"mi/{a}"] = float(mi.se)
            if len(attrs) > 1:
                others = tuple(b for b in attrs if b != a)
                cmi = self.world.mutual_information(a, given=others, n=self.truth_samples, seed=self.seed)
                gt.conditional_mutual_information[a] = cmi.item()
                gt.standard_errors[f"cmi/{a}"] = float(cmi.se)
        return gt

    def ground_truth(self) -> GroundTruth:
        """Exact information per attribute, or ``I(x; text)`` for captioned worlds (Monte Carlo with
        exact posteriors; computed once). Per-word information of captions is not mapped."""
        return self._truth


class ShapesDataModule(_WorldDataModule):
    """The shapes world: attribute labels (``captions=False``) or two-object captioned scenes.

    Args:
        size: image side (16 or 32 are the presets).
        sigma: pixel noise of the world (its exact information depends on it).
        grid, shapes, colours, sizes: one-object world attributes.
        captions: use the two-object world with captions ("a red circle left of a blue square").
    """

    def __init__(self, size: int = 16, sigma: float = 0.1, grid: int = 2,
                 shapes: Sequence[str] = ("circle", "square", "triangle"),
                 colours: Sequence[str] = ("red", "green", "blue"), sizes: Sequence[str] | None = None,
                 captions: bool = False, n_train: int = 20000, n_val: int = 1000, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, truth_samples: int = 20000) -> None:
        super().__init__(n_train, n_val, batch_size, num_workers, seed, truth_samples)
        self.text = captions
        if captions:
            self.world = TwoObjectShapesWorld(size=size, shapes=shapes, colours=colours, sigma=sigma)
        else:
            self.world = ShapesWorld(size=size, shapes=shapes, colours=colours, grid=grid, sizes=sizes, sigma=sigma)


class PIDWorldDataModule(_WorldDataModule):
    """A world whose partial information decomposition is known (:class:`~infodecomp.tasks.images.PIDWorld`):
    two binary labels ``y1``, ``y2`` that are redundant, unique, synergistic or a two-bit copy.

    Args:
        kind: ``"redundant"``, ``"unique"``, ``"synergy"`` or ``"copy"``.
        size, sigma: image side and pixel noise of the world.
    """

    def __init__(self, kind: str = "synergy", size: int = 16, sigma: float = 0.1, n_train: int = 20000,
                 n_val: int = 512, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 truth_samples: int = 20000) -> None:
        super().__init__(n_train, n_val, batch_size, num_workers, seed, truth_samples)
        self.world = PIDWorld(kind=kind, size=size, sigma=sigma)


class DigitsDataModule(_WorldDataModule):
    """scikit-learn's digits blurred by ``sigma`` (the smoothed empirical distribution), labelled."""

    def __init__(self, size: int = 8, sigma: float = 0.1, n_train: int = 20000, n_val: int = 1000,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0, truth_samples: int = 5000) -> None:
        super().__init__(n_train, n_val, batch_size, num_workers, seed, truth_samples)
        self.world = DigitsWorld(size=size, sigma=sigma)


class NaturalImagesDataModule(_WorldDataModule):
    """Natural images with exactly known information (:class:`~infodecomp.tasks.natural.NaturalImageWorld`):
    photographs (scikit-learn's, CIFAR-10's from disk, or a folder of your own) with a pasted patch,
    labelled ``scene_a``, ``scene_b`` (two noisy raters of the scene) and ``patch`` (a noisy rater
    of the patch, whose information lies inside the patch's square: ``masks``).

    Args:
        source, root, size, classes, per_class, patch_classes, patch, place, keep, patch_keep, sigma:
            the world's (:class:`~infodecomp.tasks.natural.NaturalImageWorld`).
    """

    def __init__(self, source: str = "photos", root: str | None = None, size: int = 32, classes: int = 4,
                 per_class: int = 6, patch_classes: int = 4, patch: int | None = None, place: str = "top left",
                 keep: float = 0.7, patch_keep: float = 0.75, sigma: float = 0.1, n_train: int = 20000,
                 n_val: int = 1024, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 truth_samples: int = 20000) -> None:
        super().__init__(n_train, n_val, batch_size, num_workers, seed, truth_samples)
        self.world = NaturalImageWorld(source=source, root=root, size=size, classes=classes, per_class=per_class,
                                       patch_classes=patch_classes, patch=patch, place=place, keep=keep,
                                       patch_keep=patch_keep, sigma=sigma)


class CIFAR10DataModule(_BaseDataModule):
    """CIFAR-10 from a local folder in its standard format (``cifar-10-batches-py``), labelled.

    ``download`` is off by default: nothing is fetched unless asked for. Pixels map to ``[-1, 1]``.
    """

    def __init__(self, root: str = "data/cifar10", download: bool = False, n_val: int = 1000,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.root, self.download, self.n_val = Path(root), download, n_val

    input_shape = (3, 32, 32)
    condition_names = ["label"]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        ds = load_cifar10(self.root, download=self.download)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, 32, 32)
        y = torch.tensor(ds.targets, dtype=torch.long)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        val, train = perm[: self.n_val], perm[self.n_val :]
        self.train_set = DictDataset(x[train], {"label": y[train]})
        self.val_set = DictDataset(x[val], {"label": y[val]})


class CaptionFolderDataModule(_BaseDataModule):
    """A folder of images with a CSV of captions (columns ``file,caption``), for text models."""

    def __init__(self, root: str, captions_csv: str = "captions.csv", image_size: int = 32, n_val: int = 16,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.root, self.image_size, self.n_val = Path(root), image_size, n_val
        self.csv_path = self.root / captions_csv
        if not self.csv_path.is_file():
            raise ValueError(f"captions file not found: {self.csv_path}")
        with self.csv_path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
        if not {"file", "caption"} <= set(header):
            raise ValueError(f"{self.csv_path} must have a header with columns 'file' and 'caption', "
                             f"got {', '.join(header) if header else 'none'}")
        if not rows:
            raise ValueError(f"{self.csv_path} has a header and no rows: expected one row per image (file,caption)")
        self.rows = rows

    condition_names = ["text"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def vocabulary(self) -> list[str]:
        return sorted({w for r in self.rows for w in r["caption"].split()})

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from PIL import Image, UnidentifiedImageError

        images = []
        for r in self.rows:
            path = self.root / r["file"]
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC)
                    images.append(torch.from_numpy(np.asarray(img).copy()))
            except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read image {path} listed in {self.csv_path}: {err}") from err
        x = torch.stack(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        captions = [r["caption"] for r in self.rows]
        n_val = min(self.n_val, len(x) // 2)
        self.train_set = DictDataset(x[n_val:], captions=captions[n_val:])
        self.val_set = DictDataset(x[:n_val], captions=captions[:n_val])
