"""Saving and loading graphs: ``.npz`` arrays plus a JSON header, never pickle.

File layout (format version 1)
------------------------------
``header``               uint8 array holding UTF-8 JSON: format version, groups, blocks (name,
                         src, dst, kind, mask shape, groups, fold, offset, spec), provenance.
``mask_<i>``             ``np.packbits`` of block ``i``'s flattened mask (uint8).
``pair_weight_<i>``      block ``i``'s per-pair weights (float32), when known.
``adjacency_indptr``,
``adjacency_indices``    the binary adjacency in CSR form, so other tools can read the
                         topology with ``numpy.load`` alone; recomputed and checked on load.

Files are written to a temporary file in the target folder and moved into place, so a crash
never leaves a half-written graph. Loading uses ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup

__all__ = ["FORMAT_VERSION", "save_graph", "load_graph", "atomic_write", "check_output_folder"]

#: Version of the on-disk format written by :func:`save_graph`.
FORMAT_VERSION = 1


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    The temporary file is removed if ``write`` fails, so ``path`` is either the complete new
    file or untouched.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_output_folder(out: str | os.PathLike) -> None:
    """Fail early, creating nothing, when folder ``out`` cannot be created or written: its
    nearest existing ancestor must be a writable folder."""
    out = Path(out)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {str(out)!r} is not writable (checked {str(probe)!r})")


def save_graph(graph: NetworkGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` to ``path`` (``.npz`` is appended when missing); returns the path."""
    if not isinstance(graph, NetworkGraph):
        raise TypeError(f"save_graph needs a NetworkGraph, got {type(graph).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays: dict[str, np.ndarray] = {}
    blocks_meta = []
    for i, b in enumerate(graph.blocks):
        meta = {
            "name": b.name, "src": b.src, "dst": b.dst, "kind": b.kind, "groups": b.groups,
            "fold": b.fold, "offset": b.offset, "spec": dict(b.spec),
            "mask_shape": None if b.mask is None else list(b.mask.shape),
            "has_pair_weight": b.pair_weight is not None,
        }
        if b.mask is not None:
            arrays[f"mask_{i}"] = np.packbits(b.mask.ravel())
        if b.pair_weight is not None:
            arrays[f"pair_weight_{i}"] = np.ascontiguousarray(b.pair_weight, dtype=np.float32)
        blocks_meta.append(meta)
    header = {
        "format": "n2ngraph",
        "format_version": FORMAT_VERSION,
        "groups": [{"name": g.name, "start": g.start, "size": g.size, "shape": list(g.shape)}
                   for g in graph.groups],
        "blocks": blocks_meta,
        "provenance": dict(graph.provenance),
    }
    try:
        text = json.dumps(header)
    except TypeError as exc:
        raise ValueError(f"graph provenance or block spec is not JSON-serialisable: {exc}") from exc
    arrays["header"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    adjacency = graph.adjacency()
    arrays["adjacency_indptr"] = adjacency.indptr
    arrays["adjacency_indices"] = adjacency.indices

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def load_graph(path: str | os.PathLike) -> NetworkGraph:
    """Read a graph written by :func:`save_graph`; never unpickles.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not an n2ngraph graph, has an unknown format version, or is inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - zip/npz errors of any kind
        raise ValueError(f"{str(path)!r} is not a readable .npz graph file: {exc}") from exc
    if "header" not in arrays:
        raise ValueError(f"{str(path)!r} has no n2ngraph header; was it written by save_graph?")
    try:
        header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{str(path)!r}: header is not valid JSON: {exc}") from exc
    version = header.get("format_version")
    if header.get("format") != "n2ngraph" or version != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r}: format {header.get('format')!r} version {version!r}; this n2ngraph "
            f"reads format 'n2ngraph' version {FORMAT_VERSION}"
        )
    groups = tuple(NodeGroup(g["name"], g["start"], g["size"], tuple(g["shape"]))
                   for g in header["groups"])
    blocks = []
    for i, meta in enumerate(header["blocks"]):
        mask = None
        if meta["mask_shape"] is not None:
            shape = tuple(meta["mask_shape"])
            count = int(np.prod(shape))
            mask = np.unpackbits(arrays[f"mask_{i}"], count=count).astype(bool).reshape(shape)
            mask.flags.writeable = False
        pair = arrays.get(f"pair_weight_{i}") if meta["has_pair_weight"] else None
        blocks.append(EdgeBlock(meta["name"], meta["src"], meta["dst"], meta["kind"], mask, pair,
                                meta["groups"], meta["fold"], meta["offset"], meta["spec"]))
    graph = NetworkGraph(groups, tuple(blocks), header["provenance"])
    adjacency = graph.adjacency()
    if not (np.array_equal(adjacency.indptr, arrays["adjacency_indptr"])
            and np.array_equal(adjacency.indices, arrays["adjacency_indices"])):
        raise ValueError(f"{str(path)!r}: stored adjacency does not match the stored masks")
    return graph
