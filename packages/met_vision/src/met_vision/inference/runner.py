"""Inference over many images on one or more devices, written chunk by chunk so that a killed
run resumes where it stopped.

The inputs are cut into fixed chunks (``chunk_size`` images, in input order). Each finished
chunk is written atomically to ``<parts>/part-<n>.npz``; a rerun with the same checkpoint and
inputs skips the chunks already there. With ``devices > 1`` one process per device (spawned;
``cuda:<rank>`` on GPUs) takes every ``devices``-th remaining chunk: inference needs no gradient
synchronisation, so the processes share nothing but the parts folder. Chunks and batches do not
depend on the device count, so the results do not either.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from met_vision.inference.predictor import Predictor

Output = Literal["probs", "features"]


@dataclass(frozen=True)
class RunSpec:
    """What to run: checkpoint, device(s), loader settings and the output kind."""

    ckpt: str
    output: Output = "probs"
    device: str = "auto"
    devices: int = 1
    num_workers: int = 0
    batch_size: int = 64
    chunk_size: int = 1024


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads(num_workers: int, processes: int = 1) -> int:
    """Intra-op threads per inference process so that, together with the decoding workers,
    the processes do not ask for more CPUs than there are (oversubscribed threads spin and
    wait on each other): ``usable CPUs / processes - workers``, at least 1."""
    return max(1, usable_cpus() // max(1, processes) - max(0, num_workers))


def inputs_fingerprint(spec: RunSpec, model_id: str, items: Sequence[str]) -> str:
    """Identifies a run's results: the model, the output kind, the chunking and the inputs."""
    digest = hashlib.sha256(f"{model_id}|{spec.output}|{spec.chunk_size}".encode())
    for item in items:
        digest.update(item.encode() + b"\n")
    return digest.hexdigest()


def _part(parts: Path, chunk: int) -> Path:
    return parts / f"part-{chunk:06d}.npz"


def _prepare_parts(parts: Path, fingerprint: str) -> int:
    """Create or check the parts folder; returns how many parts are already done."""
    meta = parts / "run.json"
    if meta.is_file() and json.loads(meta.read_text()).get("fingerprint") != fingerprint:
        print(f"{parts}: results of another model or input list; starting again", file=sys.stderr)
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not meta.is_file():
        meta.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return len(list(parts.glob("part-*.npz")))


def _run_chunks(
    rank: int,
    spec: RunSpec,
    items: list[str],
    chunks: list[int],
    parts: str,
    predictor: Predictor | None = None,
) -> None:
    """Worker body: predict ``chunks`` and write one part file per chunk, with
    :func:`cpu_threads` intra-op threads (the caller's setting is restored afterwards)."""
    import torch

    from met_vision.inference.predictor import Predictor

    device = spec.device
    if spec.devices > 1 and device in ("cuda", "auto") and torch.cuda.is_available():
        device = f"cuda:{rank}"
    if predictor is None:
        predictor = Predictor.from_checkpoint(spec.ckpt, device)
    predictor.batch_size, predictor.num_workers = spec.batch_size, spec.num_workers
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(spec.num_workers, spec.devices))
    try:
        for chunk in chunks[rank :: max(1, spec.devices)]:
            _predict_chunk(predictor, spec, items, chunk, Path(parts))
    finally:
        torch.set_num_threads(threads)


def _predict_chunk(
    predictor: Predictor, spec: RunSpec, items: list[str], chunk: int, parts: Path
) -> None:
    """Predict one chunk of ``items`` and write its part file atomically."""
    start = chunk * spec.chunk_size
    part_items = items[start : start + spec.chunk_size]
    ok = np.zeros(len(part_items), dtype=bool)
    rows: list[np.ndarray] = []
    errors: list[str] = []
    for positions, images, errs in predictor.batches(part_items):
        errors.extend(f"{start + int(e.split(': ', 1)[0])}: {e.split(': ', 1)[1]}" for e in errs)
        if positions:
            out = (
                predictor.probs_of(images)
                if spec.output == "probs"
                else predictor.features_of(images)
            )
            rows.append(out.astype(np.float32))
            ok[positions] = True
    values = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    target = _part(parts, chunk)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, ok=ok, values=values, errors=np.array(errors, dtype=str))
    os.replace(tmp, target)


def run(
    spec: RunSpec,
    model_id: str,
    items: Sequence[str],
    parts: Path,
    predictor: Predictor | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Predict ``items`` (resuming from ``parts``); returns ``(ok (N,), values of the readable
    items (n_ok, D), errors, chunks that were already done)``. ``predictor`` (already on its
    device) is used when there is one device."""
    items = [str(i) for i in items]
    done_before = _prepare_parts(parts, inputs_fingerprint(spec, model_id, items))
    n_chunks = (len(items) + spec.chunk_size - 1) // spec.chunk_size
    todo = [c for c in range(n_chunks) if not _part(parts, c).is_file()]
    if todo and spec.devices > 1:
        import torch.multiprocessing as mp

        mp.start_processes(
            _run_chunks,
            args=(spec, items, todo, str(parts)),
            nprocs=spec.devices,
            start_method="spawn",
        )
    elif todo:
        _run_chunks(0, spec, items, todo, str(parts), predictor)
    return (*_collect(parts, n_chunks), done_before)


def _collect(parts: Path, n_chunks: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    oks: list[np.ndarray] = []
    values: list[np.ndarray] = []
    errors: list[str] = []
    for chunk in range(n_chunks):
        with np.load(_part(parts, chunk)) as part:
            oks.append(part["ok"])
            if len(part["values"]):
                values.append(part["values"])
            errors.extend(str(e) for e in part["errors"])
    ok = np.concatenate(oks) if oks else np.zeros(0, dtype=bool)
    matrix = np.concatenate(values) if values else np.zeros((0, 0), dtype=np.float32)
    return ok, matrix, errors


def spec_dict(spec: RunSpec) -> dict[str, object]:
    """The spec as JSON-able data (for meta files)."""
    return asdict(spec)
