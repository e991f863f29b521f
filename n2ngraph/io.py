"""Saving and loading graphs: ``.npz`` arrays plus a JSON header, never pickle.

File layout (format version 1)
------------------------------
``header``               uint8 array holding UTF-8 JSON: format version, groups, blocks (name,
                         src, dst, kind, mask shape, conv_groups, fold, offset, spec: the
                         non-empty fields of the block's :class:`~n2ngraph.graph.LayerSpec`),
                         provenance. Files written before the rename name ``conv_groups``
                         ``groups`` and the spec's ``op`` ``type``; both are read.
``mask_<i>``             ``np.packbits`` of block ``i``'s flattened mask (uint8).
``pair_weight_<i>``      block ``i``'s per-pair weights (float32), when known.
``adjacency_indptr``,
``adjacency_indices``    the binary adjacency in CSR form, so other tools can read the
                         topology with ``numpy.load`` alone; recomputed and checked on load.

Files are written to a temporary file in the target folder and moved into place, so a crash
never leaves a half-written graph. Loading never unpickles and treats the file as hostile: it
reads only the members it needs and checks every declared size before inflating or allocating
(docs/security.md lists the checks and limits).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from n2ngraph.graph import EdgeBlock, LayerSpec, NetworkGraph, NodeGroup

__all__ = ["FORMAT_VERSION", "FileFormatError", "save_graph", "load_graph", "graph_digest", "atomic_write",
           "check_output_folder"]

#: Version of the on-disk format written by :func:`save_graph`.
FORMAT_VERSION = 1
#: The header key of a block's convolution groups in files written before it was renamed
#: ``conv_groups`` (the same format version: the value means the same).
_OLD_CONV_GROUPS_KEY = "groups"


def _new_temporary(path: Path) -> str:
    """Create an empty, new temporary file beside ``path`` and return its name.

    Created with mode ``0o666`` so the kernel applies the process umask, as for any file a
    program opens for writing (``tempfile.mkstemp`` would make it ``0o600`` whatever the umask).
    """
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp"))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {str(path)!r}")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    The temporary file is flushed to disk (``fsync``) before the move, so after a crash or a
    power cut ``path`` is either the complete new file or untouched; the temporary file is
    removed if ``write`` fails. The file gets the mode of any newly created file,
    ``0o666 & ~umask`` (0644 under the usual umask 022). The one atomic write of the package
    (graphs, figures, tables, checkpoints).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.txt", lambda tmp: pathlib.Path(tmp).write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist")
    tmp = _new_temporary(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # read-write: fsync needs a writable handle on some systems
            os.fsync(fh.fileno())
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
    """Write ``graph`` to ``path`` (``.npz`` is appended when missing); returns the path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from n2ngraph import models, to_graph
    >>> g = to_graph(models.lenet300())
    >>> path = save_graph(g, pathlib.Path(tempfile.mkdtemp()) / "lenet")
    >>> path.name, load_graph(path) == g
    ('lenet.npz', True)
    """
    if not isinstance(graph, NetworkGraph):
        raise TypeError(f"save_graph needs a NetworkGraph, got {type(graph).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays: dict[str, np.ndarray] = {}
    blocks_meta = []
    for i, b in enumerate(graph.blocks):
        meta = {
            "name": b.name, "src": b.src, "dst": b.dst, "kind": b.kind, "conv_groups": b.conv_groups,
            "fold": b.fold, "offset": b.offset, "spec": b.spec.to_dict(),
            "mask_shape": None if b.mask is None else list(b.mask.shape),
            "has_pair_weight": b.pair_weight is not None,
            "has_index": b.index is not None,
        }
        if b.index is not None:
            arrays[f"index_{i}"] = np.ascontiguousarray(b.index, dtype="<i8")
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


class FileFormatError(ValueError):
    """A file that n2ngraph refuses to load: one line naming the file and what is wrong.

    A ``ValueError``, so callers that catch ``ValueError`` keep working. ``path`` is the file.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the reason contained
        super().__init__(f"{str(self.path)!r}: {self.reason}")


#: Limits :func:`load_graph` applies before allocating anything (see docs/security.md).
#: (ResNet50's header is 24 KB with 51 groups and 66 blocks; these are two orders above any
#: real network and keep the parsed header under ~100 MB of Python objects.)
MAX_HEADER_BYTES = 4 << 20
MAX_HEADER_CONTAINERS = 100_000
MAX_HEADER_VALUES = 500_000
MAX_GROUPS = 1 << 14
MAX_BLOCKS = 1 << 14
MAX_NODES = 1 << 26
#: Default ``max_weights`` of :func:`load_graph`: total mask entries (one byte each once loaded);
#: VGG19 with torchvision's head has 143M weights.
MAX_WEIGHTS = 1 << 30
#: Most a deflate stream can expand (1032:1, with slack); a member that declares more than this
#: times its compressed size is lying.
_DEFLATE_MAX_RATIO = 1100
_NPY_MAX_HEADER = 4096


class _GraphArchive:
    """The members of a graph ``.npz`` that :func:`load_graph` reads, one at a time, each size
    checked against what the caller expects and what the archive holds before it is inflated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            infos = self.zip.infolist()
        except Exception as exc:  # noqa: BLE001 - zipfile raises several types on a corrupt archive
            raise FileFormatError(path, f"not a readable .npz graph file ({type(exc).__name__}: {exc})") from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.duplicates: set[str] = set()
        for info in infos:
            if info.filename in self.members:
                self.duplicates.add(info.filename)
            self.members[info.filename] = info

    def close(self) -> None:
        self.zip.close()

    def has(self, name: str) -> bool:
        return f"{name}.npy" in self.members

    def read(self, name: str, dtypes: tuple[str, ...], shape: tuple[int, ...] | None = None, *,
             max_bytes: int | None = None) -> np.ndarray:
        """Array member ``name``: its ``.npy`` header must give one of ``dtypes`` and ``shape``
        (when given) and its declared size must match exactly, before anything is inflated."""
        member = f"{name}.npy"
        info = self.members.get(member)
        if info is None:
            raise FileFormatError(self.path, f"member {name!r} is missing")
        if member in self.duplicates:
            raise FileFormatError(self.path, f"member {name!r} appears twice")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise FileFormatError(self.path, f"member {name!r} declares {info.file_size} bytes but "
                                                 f"stores {info.compress_size}")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
                raise FileFormatError(self.path, f"member {name!r} declares {info.file_size} bytes from "
                                                 f"{info.compress_size} compressed: impossible for deflate")
        else:
            raise FileFormatError(self.path, f"member {name!r} uses zip compression method "
                                             f"{info.compress_type}; graphs use stored or deflate")
        try:
            with self.zip.open(info) as fh:
                head = fh.read(10)
                if len(head) < 10 or head[:6] != b"\x93NUMPY":
                    raise FileFormatError(self.path, f"member {name!r} is not a .npy array")
                major = head[6]
                if major == 1:
                    hlen, pre = int.from_bytes(head[8:10], "little"), 10
                elif major in (2, 3):
                    head += fh.read(2)
                    hlen, pre = int.from_bytes(head[8:12], "little"), 12
                else:
                    raise FileFormatError(self.path, f"member {name!r}: unknown .npy version {major}")
                if hlen > _NPY_MAX_HEADER:
                    raise FileFormatError(self.path, f"member {name!r}: .npy header of {hlen} bytes")
                text = fh.read(hlen)
                if len(text) != hlen:
                    raise FileFormatError(self.path, f"member {name!r} is truncated")
                got_shape, fortran, dtype = _npy_header(text, major)
                if dtype is None or dtype.str not in dtypes:
                    raise FileFormatError(self.path, f"member {name!r} has dtype "
                                                     f"{getattr(dtype, 'str', dtype)}, expected one of {dtypes}")
                if shape is not None and got_shape != shape:
                    raise FileFormatError(self.path, f"member {name!r} has shape {got_shape}, the header "
                                                     f"implies {shape}")
                if fortran and len(got_shape) > 1:
                    raise FileFormatError(self.path, f"member {name!r} is in Fortran order")
                nbytes = math.prod(got_shape) * dtype.itemsize
                if max_bytes is not None and nbytes > max_bytes:
                    raise FileFormatError(self.path, f"member {name!r} holds {nbytes} bytes, more than the "
                                                     f"{max_bytes} allowed")
                if info.file_size != pre + hlen + nbytes:
                    raise FileFormatError(self.path, f"member {name!r} declares {info.file_size} bytes; its "
                                                     f"shape {got_shape} and dtype {dtype} need "
                                                     f"{pre + hlen + nbytes}")
                raw = fh.read(nbytes + 1)
                if len(raw) != nbytes:
                    raise FileFormatError(self.path, f"member {name!r} holds {len(raw)} data bytes, "
                                                     f"expected {nbytes}")
        except FileFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt data: zlib, CRC, struct, encryption errors
            raise FileFormatError(self.path, f"member {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
        return np.frombuffer(raw, dtype=dtype).reshape(got_shape)


def _npy_header(text: bytes, major: int) -> tuple[tuple[int, ...], bool, np.dtype | None]:
    """Shape, Fortran flag and dtype of a ``.npy`` header dict (literal-evaluated by numpy's own
    parser); the dtype is None when it is not a plain numeric type."""
    import ast

    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    except Exception:  # noqa: BLE001 - any malformed header text
        return (-1,), False, None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        return (-1,), False, None
    shape, fortran, descr = header["shape"], header["fortran_order"], header["descr"]
    if (not isinstance(shape, tuple) or len(shape) > 8
            or not all(type(d) is int and d >= 0 for d in shape) or type(fortran) is not bool):
        return (-1,), False, None
    if not isinstance(descr, str) or len(descr) > 8:
        return shape, fortran, None
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        return shape, fortran, None
    return shape, fortran, dtype


def _want(path: Path, ok: bool, what: str) -> None:
    if not ok:
        raise FileFormatError(path, what)


def _is_int(value: Any, low: int = 0, high: int | None = None) -> bool:
    return type(value) is int and value >= low and (high is None or value <= high)


def _parse_header(path: Path, raw: np.ndarray) -> dict:
    text = raw.tobytes()
    # JSON makes one Python object per value: bound their number before parsing (a 4 MB header of
    # tiny objects would otherwise become ~1 GB of dicts)
    containers = text.count(b"{") + text.count(b"[")
    values = text.count(b",") + text.count(b":")
    if containers > MAX_HEADER_CONTAINERS or values > MAX_HEADER_VALUES:
        raise FileFormatError(path, f"header has {containers} objects/lists and {values} separators; at most "
                                    f"{MAX_HEADER_CONTAINERS} and {MAX_HEADER_VALUES} are accepted")
    try:
        header = json.loads(text.decode("utf-8"))
    except RecursionError:
        raise FileFormatError(path, "header JSON nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FileFormatError(path, f"header is not valid JSON ({exc})") from None
    _want(path, isinstance(header, dict), "header is not a JSON object")
    version = header.get("format_version")
    if header.get("format") != "n2ngraph" or version != FORMAT_VERSION:
        raise FileFormatError(path, f"format {header.get('format')!r} version {version!r}; this n2ngraph "
                                    f"reads format 'n2ngraph' version {FORMAT_VERSION}")
    groups, blocks = header.get("groups"), header.get("blocks")
    _want(path, isinstance(groups, list) and 1 <= len(groups) <= MAX_GROUPS,
          f"header 'groups' must be a list of 1 to {MAX_GROUPS} groups")
    _want(path, isinstance(blocks, list) and len(blocks) <= MAX_BLOCKS,
          f"header 'blocks' must be a list of at most {MAX_BLOCKS} blocks")
    _want(path, isinstance(header.get("provenance", {}), dict), "header 'provenance' is not an object")
    nodes = 0
    for i, g in enumerate(groups):
        _want(path, isinstance(g, dict) and isinstance(g.get("name"), str)
              and _is_int(g.get("start")) and _is_int(g.get("size"), 1, MAX_NODES)
              and isinstance(g.get("shape", []), list) and len(g.get("shape", [])) <= 8
              and all(_is_int(d, 0, MAX_NODES) for d in g.get("shape", [])),
              f"header group {i} is not {{name: str, start: int, size: int >= 1, shape: [int]}}")
        nodes += g["size"]
        _want(path, nodes <= MAX_NODES, f"groups hold more than {MAX_NODES} nodes")
    for i, b in enumerate(blocks):
        _want(path, isinstance(b, dict), f"header block {i} is not an object")
        _want(path, all(isinstance(b.get(k), str) for k in ("name", "src", "dst", "kind")),
              f"header block {i}: name, src, dst and kind must be strings")
        if _OLD_CONV_GROUPS_KEY in b:  # a file written before EdgeBlock.groups became conv_groups
            _want(path, "conv_groups" not in b, f"header block {i} ({b['name']!r}) has both "
                  f"'conv_groups' and its former name {_OLD_CONV_GROUPS_KEY!r}")
            b["conv_groups"] = b.pop(_OLD_CONV_GROUPS_KEY)
        # a residual block may take a channel range of its source (negative offset, graph.EdgeBlock)
        low = -MAX_NODES if b.get("kind") == "residual" else 0
        _want(path, _is_int(b.get("conv_groups"), 1, MAX_NODES) and _is_int(b.get("fold"), 1, MAX_NODES * 64)
              and _is_int(b.get("offset"), low, MAX_NODES),
              f"header block {i} ({b['name']!r}): conv_groups, fold and offset must be ints (>= 1, >= 1, "
              f">= 0; a residual block's offset may be negative)")
        _want(path, type(b.get("has_index", False)) is bool,
              f"header block {i} ({b['name']!r}): has_index must be true or false")
        _want(path, isinstance(b.get("spec", {}), dict), f"header block {i} ({b['name']!r}): spec is not an object")
        _want(path, type(b.get("has_pair_weight")) is bool,
              f"header block {i} ({b['name']!r}): has_pair_weight must be true or false")
        shape = b.get("mask_shape")
        _want(path, shape is None or (isinstance(shape, list) and 2 <= len(shape) <= 8
                                      and all(_is_int(d, 1, MAX_WEIGHTS) for d in shape)),
              f"header block {i} ({b['name']!r}): mask_shape must be null or a list of 2 to 8 ints >= 1")
    return header


def _check_block_shapes(path: Path, groups: tuple[NodeGroup, ...], metas: list[dict]) -> None:
    """Each block's declared mask shape must join its groups' sizes (as :class:`NetworkGraph`
    will check), before any mask member is read: a header cannot make the loader inflate a mask
    larger than the groups it claims to join."""
    sizes = {g.name: g.size for g in groups}
    for i, m in enumerate(metas):
        name = m["name"]
        if m["src"] not in sizes or m["dst"] not in sizes:
            raise FileFormatError(path, f"block {i} ({name!r}) joins unknown groups {m['src']!r} -> {m['dst']!r}")
        shape = m["mask_shape"]
        if m["kind"] == "residual":
            if shape is not None or m["has_pair_weight"]:
                raise FileFormatError(path, f"residual block {i} ({name!r}) has a mask or pair weights")
            continue
        if shape is None:
            raise FileFormatError(path, f"{m['kind']} block {i} ({name!r}) has no mask_shape")
        src, dst = sizes[m["src"]], sizes[m["dst"]]
        if shape[0] != dst or shape[1] % m["fold"] or shape[1] // m["fold"] * m["conv_groups"] != src:
            raise FileFormatError(path, f"block {i} ({name!r}): mask_shape {shape} (conv_groups={m['conv_groups']}, "
                                        f"fold={m['fold']}) does not join groups of {src} -> {dst} nodes")


def load_graph(path: str | os.PathLike, *, max_weights: int = MAX_WEIGHTS) -> NetworkGraph:
    """Read a graph written by :func:`save_graph`; never unpickles.

    Only the members the header names are read, one at a time; every size the file declares
    (JSON header, groups, blocks, mask shapes, each member's inflated size) is checked against
    the bytes present and the limits of this module before anything that size is allocated.
    Packed masks must have exactly ``ceil(mask.size / 8)`` bytes with zero padding bits; pair
    weights must be finite and >= 0. See docs/security.md.

    Parameters
    ----------
    path : path
        The ``.npz`` file.
    max_weights : int
        Most mask entries (kept or not, all blocks together) to accept; a loaded graph holds one
        byte per entry. Default :data:`MAX_WEIGHTS` (2**30).

    Raises
    ------
    FileNotFoundError
        No such file.
    FileFormatError
        (a ``ValueError``) The file is not an n2ngraph graph, has an unknown format version, is
        inconsistent or exceeds a limit; the message names the file and the problem in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {str(path)!r}")
    archive = _GraphArchive(path)
    try:
        if not archive.has("header"):
            raise FileFormatError(path, "no n2ngraph header; was it written by save_graph?")
        header = _parse_header(path, archive.read("header", ("|u1", "|i1"), max_bytes=MAX_HEADER_BYTES))
        metas = header["blocks"]
        total = sum(math.prod(m["mask_shape"]) for m in metas if m["mask_shape"] is not None)
        if total > max_weights:
            raise FileFormatError(path, f"blocks declare {total} mask entries, more than max_weights="
                                        f"{max_weights}")
        try:
            groups = tuple(NodeGroup(g["name"], g["start"], g["size"], tuple(g.get("shape", ())))
                           for g in header["groups"])
        except (TypeError, ValueError) as exc:
            raise FileFormatError(path, f"bad group: {exc}") from None
        _check_block_shapes(path, groups, metas)
        blocks = []
        for i, meta in enumerate(metas):
            mask = pair = None
            if meta["mask_shape"] is not None:
                shape = tuple(meta["mask_shape"])
                count = math.prod(shape)
                packed = archive.read(f"mask_{i}", ("|u1",), ((count + 7) // 8,))
                if count % 8 and packed[-1] & (0xFF >> (count % 8)):
                    raise FileFormatError(path, f"mask_{i} ({meta['name']!r}) has set padding bits after "
                                                f"its {count} entries")
                mask = np.unpackbits(packed, count=count).view(bool).reshape(shape)
                mask.flags.writeable = False
                if meta["has_pair_weight"]:
                    if shape[1] % meta["fold"]:
                        raise FileFormatError(path, f"block {meta['name']!r}: {shape[1]} input columns do "
                                                    f"not fold by {meta['fold']}")
                    pair = archive.read(f"pair_weight_{i}", ("<f4", ">f4"),
                                        (shape[0], shape[1] // meta["fold"])).astype(np.float32)
            index = None
            if meta.get("has_index", False):
                src_size = next((g.size for g in groups if g.name == meta["src"]), None)
                if src_size is None:
                    raise FileFormatError(path, f"block {meta['name']!r}: unknown source group {meta['src']!r}")
                index = archive.read(f"index_{i}", ("<i8", ">i8"), (src_size,)).astype(np.int64)
            try:
                blocks.append(EdgeBlock(meta["name"], meta["src"], meta["dst"], meta["kind"], mask, pair,
                                        meta["conv_groups"], meta["fold"], meta["offset"],
                                        LayerSpec.from_dict(meta.get("spec", {})), index=index))
            except (TypeError, ValueError) as exc:
                raise FileFormatError(path, f"block {i}: {exc}") from None
        try:
            graph = NetworkGraph(groups, tuple(blocks), header.get("provenance", {}))
        except (TypeError, ValueError) as exc:
            raise FileFormatError(path, f"inconsistent graph: {exc}") from None
        n = graph.num_nodes
        indptr = archive.read("adjacency_indptr", ("<i4", "<i8", ">i4", ">i8"), (n + 1,))
        adjacency = graph.adjacency()
        indices = archive.read("adjacency_indices", ("<i4", "<i8", ">i4", ">i8"), (adjacency.nnz,))
        if not (np.array_equal(adjacency.indptr, indptr) and np.array_equal(adjacency.indices, indices)):
            raise FileFormatError(path, "stored adjacency does not match the stored masks")
        return graph
    finally:
        archive.close()


def graph_digest(graph: NetworkGraph) -> str:
    """SHA-256 (hex) of what a model built from ``graph`` depends on: groups (names, sizes,
    shapes) and blocks (names, ends, kind, conv_groups, fold, offset, spec, node map and mask bits). Pair
    weights and provenance are left out. Two graphs with equal digests build identical masked
    models."""
    h = hashlib.sha256(b"n2ngraph-graph-v1\0")
    h.update(json.dumps([[g.name, g.start, g.size, list(g.shape)] for g in graph.groups]).encode())
    for b in graph.blocks:
        h.update(json.dumps([b.name, b.src, b.dst, b.kind, b.conv_groups, b.fold, b.offset,
                             b.spec.to_dict(), None if b.mask is None else list(b.mask.shape)],
                            sort_keys=True, default=str).encode())
        if b.index is not None:  # only blocks with a node map add bytes: older digests stay valid
            h.update(b"index\0" + np.ascontiguousarray(b.index, dtype="<i8").tobytes())
        if b.mask is not None:
            h.update(np.packbits(b.mask.ravel()).tobytes())
    return h.hexdigest()
