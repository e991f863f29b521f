"""The network graph: node groups, edge blocks and the adjacency they define.

``NetworkGraph`` is the single source of truth for topology (docs/design.md, "Graph semantics").
It is immutable: every edit returns a new graph. Nothing here imports torch.

Node order
----------
Nodes are numbered group by group in topological order: group ``g`` owns nodes
``g.start .. g.start + g.size - 1``. The first group is the network input, the last the output.

Edge direction
--------------
A block joins ``src`` (earlier group) to ``dst`` (later group). The adjacency is undirected:
``A[i, j] = A[j, i] = 1`` when any block joins node ``i`` and node ``j``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["BLOCK_KINDS", "LayerSpec", "NodeGroup", "EdgeBlock", "NetworkGraph"]

#: The kinds of edge block (docs/design.md): weight layers, learnable N2NSkip connections and
#: parameter-free identity shortcuts.
BLOCK_KINDS = ("sequential", "n2nskip", "residual")


@dataclass(frozen=True)
class NodeGroup:
    """One activation tensor entering or leaving a weight layer.

    Parameters
    ----------
    name : str
        Unique name; for a weight layer's output the module path of that layer.
    start : int
        Index of the group's first node in the graph's node order.
    size : int
        Number of nodes: neurons (fully connected activation) or channels (conv activation).
    shape : tuple of int
        Per-sample shape of the traced activation, e.g. ``(64, 16, 16)`` for channels with a
        16 x 16 spatial size or ``(512,)`` for neurons. Empty when unknown.
    """

    name: str
    start: int
    size: int
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"group name must be a str, got {self.name!r}")
        for attr in ("start", "size"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"group {self.name!r}: {attr} must be an int, got {value!r}")
            object.__setattr__(self, attr, int(value))
        shape = tuple(self.shape)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise TypeError(f"group {self.name!r}: shape must be a tuple of ints >= 0, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))

    @property
    def stop(self) -> int:
        """One past the last node index."""
        return self.start + self.size

    @property
    def nodes(self) -> np.ndarray:
        """Node indices of the group, shape ``(size,)``."""
        return np.arange(self.start, self.stop)

    @property
    def spatial(self) -> tuple[int, ...]:
        """Spatial size ``(h, w)`` of a channel group, ``()`` for neurons."""
        return tuple(self.shape[1:]) if len(self.shape) > 1 else ()


#: The key of :attr:`LayerSpec.op` in specs written before the spec was typed (version 0.1
#: files); :meth:`LayerSpec.from_dict` reads it as ``op``.
_OLD_OP_KEY = "type"


def _int_tuple(value, what: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"layer spec {what} must be an int or a sequence of ints, got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise TypeError(f"layer spec {what} must be an int or a sequence of ints, got {value!r}")
    return tuple(int(v) for v in items)


@dataclass(frozen=True)
class LayerSpec:
    """What an edge block does besides joining nodes: the layer's op and geometry.

    Topology lives in :class:`EdgeBlock`'s groups and mask; this record holds what the bridge
    needs to rebuild the layer and what a reader needs to name it. Not part of topology
    (``==`` on graphs ignores it). Every field is optional; a saved graph stores the non-empty
    ones (:meth:`to_dict`).

    Parameters
    ----------
    op : str, optional
        The op: ``"Linear"``, ``"Conv2d"`` for weight blocks; ``"add"``, ``"concat"``,
        ``"identity"`` for residual ones.
    module : str, optional
        Module path of the traced weight layer (``model.get_submodule(module)``).
    added_by : str, optional
        The graph edit that made the block (``"add_n2nskip"``, ``"add_resskip"``); ``None`` for
        blocks traced from the model.
    kernel_size, stride, padding, dilation : tuple of int, optional
        Conv geometry, one entry per spatial dimension (``padding`` may also be ``"same"`` or
        ``"valid"``).
    norm : str, optional
        Normalisation inside an added skip (``"batch"``).
    pool : str, optional
        How an added skip reaches the target's spatial size (``"adaptive_avg"``,
        ``"adaptive_max"``, ``"global_avg"``).
    output_size, input_size : tuple of int, optional
        Spatial sizes ``(h, w)`` a skip pools to and reads from.
    order : str, optional
        Op order inside a conv skip (``"pool-conv-act"`` or ``"conv-bn-act-pool"``).
    span : int, optional
        Layers a skip jumps (``depth[dst] - depth[src]``).
    init_seed : int, optional
        Seed of an N2NSkip block's initial weights.
    pad_channels : int, optional
        Zero channels an identity skip appends to reach the target's width.

    Examples
    --------
    >>> spec = LayerSpec(op="Conv2d", module="features.0", kernel_size=3, padding=(1, 1))
    >>> spec.kernel_size
    (3,)
    >>> spec.to_dict()
    {'op': 'Conv2d', 'module': 'features.0', 'kernel_size': [3], 'padding': [1, 1]}
    >>> LayerSpec.from_dict(spec.to_dict()) == spec
    True
    """

    op: str | None = None
    module: str | None = None
    added_by: str | None = None
    kernel_size: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    padding: tuple[int, ...] | str | None = None
    dilation: tuple[int, ...] | None = None
    norm: str | None = None
    pool: str | None = None
    output_size: tuple[int, ...] | None = None
    input_size: tuple[int, ...] | None = None
    order: str | None = None
    span: int | None = None
    init_seed: int | None = None
    pad_channels: int | None = None

    def __post_init__(self) -> None:
        for name in ("op", "module", "added_by", "norm", "pool", "order"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"layer spec {name} must be a str or None, got {value!r}")
        for name in ("kernel_size", "stride", "dilation", "output_size", "input_size"):
            object.__setattr__(self, name, _int_tuple(getattr(self, name), name))
        if not isinstance(self.padding, str):
            object.__setattr__(self, "padding", _int_tuple(self.padding, "padding"))
        for name in ("span", "init_seed", "pad_channels"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"layer spec {name} must be an int or None, got {value!r}")
                object.__setattr__(self, name, int(value))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSpec:
        """The spec of a JSON object written by :meth:`to_dict`; an unknown key is a ValueError
        naming the accepted ones (``"type"`` is read as ``op``, as files of version 0.1 wrote it)."""
        if isinstance(data, LayerSpec):
            return data
        if not isinstance(data, Mapping):
            raise TypeError(f"a layer spec must be a LayerSpec or a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        if _OLD_OP_KEY in data and "op" in data:
            raise ValueError(f"a layer spec has both 'op' and its former name {_OLD_OP_KEY!r}")
        values = {("op" if k == _OLD_OP_KEY else k): v for k, v in data.items()}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown layer spec keys {unknown}; accepted keys are {sorted(fields)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The non-empty fields as a JSON-serialisable dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _frozen_array(array: np.ndarray | None, dtype) -> np.ndarray | None:
    if array is None:
        return None
    with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused by the caller
        out = np.asarray(array, dtype=dtype)
    if out.flags.writeable:  # an array someone may still edit: keep a private copy
        out = out.copy()
        out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class EdgeBlock:
    """The edges between two node groups.

    Parameters
    ----------
    name : str
        Unique name; the module path for a ``sequential`` block.
    src, dst : str
        Names of the source (earlier) and destination (later) groups.
    kind : {"sequential", "n2nskip", "residual"}
        A weight layer, a sparse learnable skip, or a parameter-free identity shortcut.
    mask : ndarray of bool or None
        The weight-shaped mask ``(out, in_per_group, *kernel)``; ``None`` for ``residual``.
        A channel pair ``(o, i)`` is an edge when any kernel tap of ``mask[o, i]`` is kept.
    pair_weight : ndarray of float32, optional
        Shape ``(out, in_per_group // fold)``: the sum of ``|w|`` over the kept taps (and folded
        columns) of each channel pair, for ``adjacency(weighted=True)``. ``None`` means unknown.
        Validated once: finite and >= 0 after conversion to float32 (zero is allowed: a kept
        weight may be exactly 0; a pair with weight 0 drops out of the weighted adjacency).
    conv_groups : int
        Convolution groups (``nn.Conv2d(groups=...)``): output ``o`` sees the input channels of
        its group only. Named apart from :attr:`NetworkGraph.groups`, the node groups.
    fold : int
        Columns per source node: a Linear after a flatten of ``C x h x w`` has ``fold = h * w``
        and its column ``j`` belongs to channel ``j // fold``.
    offset : int
        For ``residual`` blocks, source node ``i`` joins destination node ``i + offset``
        (concatenation places operands at an offset ``>= 0``, and they must fit in the
        destination). A negative offset takes a channel range: a slice ``x[:, a:b]`` of a group
        is a group of ``b - a`` nodes joined from source nodes ``a .. b-1`` by ``offset = -a``;
        source nodes that land outside the destination are not joined. Other kinds: 0.
    spec : LayerSpec
        The layer's op and geometry. Not part of topology. (A JSON object of a saved graph is
        read with :meth:`LayerSpec.from_dict`.)
    index : ndarray of int, optional
        For ``residual`` blocks only, a general node map in place of ``offset`` (which must then
        be 0): source node ``i`` joins destination node ``index[i]``, none where ``index[i]`` is
        -1. Shape ``(src size,)``. A channel shuffle is a permutation ``index``.
    """

    name: str
    src: str
    dst: str
    kind: str
    mask: np.ndarray | None = None
    pair_weight: np.ndarray | None = None
    conv_groups: int = 1
    fold: int = 1
    offset: int = 0
    spec: LayerSpec = field(default_factory=LayerSpec)
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        for attr in ("name", "src", "dst", "kind"):
            if not isinstance(getattr(self, attr), str):
                raise TypeError(f"block {attr} must be a str, got {getattr(self, attr)!r}")
        for attr in ("conv_groups", "fold", "offset"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"block {self.name!r}: {attr} must be an int, got {value!r}")
            object.__setattr__(self, attr, int(value))
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"block {self.name!r}: kind {self.kind!r} is not one of {BLOCK_KINDS}")
        if self.kind == "residual":
            if self.mask is not None:
                raise ValueError(f"residual block {self.name!r} must have mask=None")
        else:
            if self.mask is None:
                raise ValueError(f"{self.kind} block {self.name!r} needs a weight-shaped mask")
            mask = np.asarray(self.mask)
            if mask.dtype != np.bool_:
                raise TypeError(
                    f"block {self.name!r}: mask dtype {mask.dtype} is not bool; pass a boolean array"
                )
            if mask.ndim < 2:
                raise ValueError(f"block {self.name!r}: mask must be at least 2-D, got {mask.shape}")
        if self.conv_groups < 1 or self.fold < 1 or (self.offset < 0 and self.kind != "residual"):
            raise ValueError(
                f"block {self.name!r}: conv_groups={self.conv_groups}, fold={self.fold}, "
                f"offset={self.offset}; conv_groups and fold must be >= 1 and offset >= 0 "
                "(negative offsets take channel ranges of residual blocks only)"
            )
        if self.index is not None:
            if self.kind != "residual" or self.offset != 0:
                raise ValueError(f"block {self.name!r}: index maps the nodes of residual blocks with "
                                 f"offset 0 only, got kind {self.kind!r} and offset {self.offset}")
            index = np.asarray(self.index)
            if index.ndim != 1 or not (np.issubdtype(index.dtype, np.integer) or index.size == 0):
                raise TypeError(f"block {self.name!r}: index must be a 1-d integer array, got "
                                f"{index.dtype} of shape {index.shape}")
            if index.size and index.min() < -1:
                raise ValueError(f"block {self.name!r}: index holds {int(index.min())}; destination "
                                 "nodes are >= 0, and -1 means none")
            object.__setattr__(self, "index", _frozen_array(index, np.int64))
        object.__setattr__(self, "mask", _frozen_array(self.mask, np.bool_))
        object.__setattr__(self, "pair_weight", _frozen_array(self.pair_weight, np.float32))
        if not isinstance(self.spec, LayerSpec):
            raise TypeError(f"block {self.name!r}: spec must be a LayerSpec, got {type(self.spec).__name__}"
                            " (LayerSpec.from_dict reads a mapping)")
        if self.mask is not None:
            cols = self.mask.shape[1]
            if cols % self.fold:
                raise ValueError(
                    f"block {self.name!r}: {cols} input columns do not fold by {self.fold}"
                )
            expected = (self.mask.shape[0], cols // self.fold)
            if self.pair_weight is not None and self.pair_weight.shape != expected:
                raise ValueError(
                    f"block {self.name!r}: pair_weight shape {self.pair_weight.shape} != {expected}"
                )
        elif self.pair_weight is not None:
            raise ValueError(f"residual block {self.name!r} must have pair_weight=None")
        if self.pair_weight is not None:
            finite = np.isfinite(self.pair_weight)
            if not finite.all() or (self.pair_weight < 0).any():
                bad = tuple(int(i) for i in np.argwhere(~finite | ~(self.pair_weight >= 0))[0])
                raise ValueError(
                    f"block {self.name!r}: pair_weight{list(bad)} = {self.pair_weight[bad]}; pair "
                    "weights are sums of |w| and must be finite and >= 0 (as float32)"
                )

    @property
    def num_params(self) -> int:
        """Kept weights (0 for a residual block)."""
        return 0 if self.mask is None else int(np.count_nonzero(self.mask))

    @property
    def dense_params(self) -> int:
        """Weights of the block when dense (0 for a residual block)."""
        return 0 if self.mask is None else int(self.mask.size)

    @property
    def out_size(self) -> int:
        """Destination nodes the block's rows cover."""
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def in_size(self) -> int:
        """Source nodes the block's columns cover (after folding and expanding conv groups)."""
        return 0 if self.mask is None else self.mask.shape[1] // self.fold * self.conv_groups

    def pair_mask(self) -> np.ndarray:
        """Channel-pair mask, shape ``(out, in_per_group // fold)``: any kept tap or column."""
        if self.mask is None:
            raise ValueError(f"residual block {self.name!r} has no mask")
        out, cols = self.mask.shape[:2]
        return self.mask.reshape(out, cols // self.fold, -1).any(axis=2)

    def local_pairs(self, src_size: int, dst_size: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges as local indices ``(dst_index, src_index, weight)``.

        ``weight`` is ``pair_weight`` (or 1 where that is unknown); a residual block gives
        ``(i + offset, i, 1)`` for every source node ``i`` that lands in the destination (or
        ``(index[i], i, 1)`` where ``index[i] >= 0``). ``dst_size``, the destination group's
        size, is needed by residual blocks with a negative offset (a channel range).
        """
        if self.mask is None:
            if self.index is not None:
                src = np.flatnonzero(self.index >= 0)
                return self.index[src], src, np.ones(src.size)
            if self.offset < 0 and dst_size is None:
                raise ValueError(f"residual block {self.name!r} takes a channel range (offset "
                                 f"{self.offset}): pass dst_size, the destination group's size")
            hi = src_size if dst_size is None else min(src_size, dst_size - self.offset)
            src = np.arange(max(0, -self.offset), max(hi, 0))
            return src + self.offset, src, np.ones(src.size)
        pm = self.pair_mask()
        rows, cols = np.nonzero(pm)
        if self.pair_weight is None:
            weight = np.ones(rows.size)
        else:
            weight = self.pair_weight[rows, cols].astype(np.float64)
        if self.conv_groups > 1:
            out_per_group = pm.shape[0] // self.conv_groups
            cols = cols + (rows // out_per_group) * pm.shape[1]
        return rows, cols, weight

    def _ends(self) -> tuple:
        """What places the block's edges, besides its mask."""
        return (self.name, self.src, self.dst, self.kind, self.conv_groups, self.fold, self.offset)

    def same_topology(self, other: EdgeBlock) -> bool:
        """True when both blocks join the same groups with the same kind and mask (or node map)."""
        if self._ends() != other._ends():
            return False
        if self.index is not None or other.index is not None:
            if self.index is None or other.index is None or not np.array_equal(self.index, other.index):
                return False
        if self.mask is None or other.mask is None:
            return self.mask is None and other.mask is None
        return self.mask.shape == other.mask.shape and bool(np.array_equal(self.mask, other.mask))

    def with_mask(self, mask: np.ndarray, pair_weight: np.ndarray | None = None) -> EdgeBlock:
        """A copy with another mask of the same shape (and optionally pair weights)."""
        mask = np.asarray(mask, dtype=bool)
        if self.mask is None or mask.shape != self.mask.shape:
            raise ValueError(
                f"block {self.name!r}: new mask shape {mask.shape} != "
                f"{None if self.mask is None else self.mask.shape}"
            )
        return dataclasses.replace(self, mask=mask, pair_weight=pair_weight)


@dataclass(frozen=True, eq=False)
class NetworkGraph:
    """An immutable graph of a (pruned) neural network.

    Parameters
    ----------
    groups : tuple of NodeGroup
        In topological order, numbered contiguously from node 0; ``groups[0]`` is the input.
    blocks : tuple of EdgeBlock
        In topological order of their destination.
    provenance : mapping
        JSON-serialisable record of where the graph came from (model, method, density, seed,
        library version). Not part of equality.

    Notes
    -----
    Equality (``==``) compares topology: group names, sizes and order, and every block's
    groups, kind and mask. Weights and provenance are ignored, so a graph traced back from a
    trained masked model equals the graph it was built from (docs/design.md, "bridge").

    Examples
    --------
    A 3-2-1 network whose first layer keeps three of its six weights:

    >>> import numpy as np
    >>> groups = (NodeGroup("input", 0, 3), NodeGroup("h", 3, 2), NodeGroup("out", 5, 1))
    >>> blocks = (EdgeBlock("h", "input", "h", "sequential", np.array([[1, 0, 1], [0, 1, 0]], bool)),
    ...           EdgeBlock("out", "h", "out", "sequential", np.ones((1, 2), bool)))
    >>> g = NetworkGraph(groups, blocks)
    >>> g.num_nodes, g.num_edges, g.num_params, g.dense_params
    (6, 5, 5, 8)
    >>> g.adjacency().toarray()[3]  # node h0 joins input nodes 0 and 2 and the output
    array([1., 0., 1., 0., 0., 1.])
    """

    groups: tuple[NodeGroup, ...]
    blocks: tuple[EdgeBlock, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))
        if not self.groups:
            raise ValueError("a NetworkGraph needs at least one node group")
        start = 0
        names: dict[str, NodeGroup] = {}
        for g in self.groups:
            if g.name in names:
                raise ValueError(f"duplicate group name {g.name!r}")
            if g.start != start or g.size < 1:
                raise ValueError(
                    f"group {g.name!r} starts at {g.start} with size {g.size}; groups must be "
                    f"contiguous from 0 with size >= 1 (expected start {start})"
                )
            names[g.name] = g
            start = g.stop
        order = {g.name: i for i, g in enumerate(self.groups)}
        seen_blocks: set[str] = set()
        for b in self.blocks:
            if b.name in seen_blocks:
                raise ValueError(f"duplicate block name {b.name!r}")
            seen_blocks.add(b.name)
            for end in (b.src, b.dst):
                if end not in names:
                    raise ValueError(f"block {b.name!r} refers to unknown group {end!r}")
            if order[b.src] >= order[b.dst]:
                raise ValueError(
                    f"block {b.name!r} joins {b.src!r} to {b.dst!r}; src must precede dst"
                )
            src, dst = names[b.src], names[b.dst]
            if b.mask is None:
                if b.index is not None:
                    if b.index.size != src.size or (b.index.size and b.index.max() >= dst.size):
                        raise ValueError(
                            f"residual block {b.name!r}: index of {b.index.size} entries up to "
                            f"{int(b.index.max()) if b.index.size else None} must map the {src.size} "
                            f"source nodes onto the {dst.size} destination nodes (or -1)"
                        )
                elif b.offset >= 0 and b.offset + src.size > dst.size:
                    raise ValueError(
                        f"residual block {b.name!r}: {src.size} source nodes at offset "
                        f"{b.offset} do not fit in {dst.size} destination nodes"
                    )
                elif b.offset < 0 and not -b.offset < min(src.size, dst.size - b.offset):
                    raise ValueError(
                        f"residual block {b.name!r}: offset {b.offset} joins none of the "
                        f"{src.size} source nodes to the {dst.size} destination nodes"
                    )
            elif b.out_size != dst.size or b.in_size != src.size:
                raise ValueError(
                    f"block {b.name!r}: mask {b.mask.shape} (conv_groups={b.conv_groups}, fold={b.fold}) "
                    f"joins {b.in_size} -> {b.out_size} nodes, but groups {b.src!r} -> {b.dst!r} "
                    f"have {src.size} -> {dst.size}"
                )
        object.__setattr__(self, "_by_name", names)

    # ----------------------------------------------------------------- lookup
    def group(self, name: str) -> NodeGroup:
        """The group called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no group {name!r}; groups are {[g.name for g in self.groups]}") from None

    def block(self, name: str) -> EdgeBlock:
        """The block called ``name``."""
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks are {[b.name for b in self.blocks]}")

    def blocks_of_kind(self, kind: str) -> tuple[EdgeBlock, ...]:
        """Blocks of one kind, in order."""
        if kind not in BLOCK_KINDS:
            raise ValueError(f"kind {kind!r} is not one of {BLOCK_KINDS}")
        return tuple(b for b in self.blocks if b.kind == kind)

    # ------------------------------------------------------------------ sizes
    @property
    def num_nodes(self) -> int:
        """Number of nodes ``n``."""
        return self.groups[-1].stop

    @property
    def input_nodes(self) -> np.ndarray:
        """Node indices of the input group (the default heat sources)."""
        return self.groups[0].nodes

    @property
    def output_nodes(self) -> np.ndarray:
        """Node indices of the output group."""
        return self.groups[-1].nodes

    @property
    def num_edges(self) -> int:
        """Distinct undirected node pairs joined by at least one block."""
        return int(self.adjacency().nnz // 2)

    @property
    def num_params(self) -> int:
        """Kept weights of the sequential and n2nskip blocks."""
        return sum(b.num_params for b in self.blocks)

    @property
    def dense_params(self) -> int:
        """Weights of the dense reference: all entries of the sequential masks."""
        return sum(b.dense_params for b in self.blocks if b.kind == "sequential")

    @property
    def density(self) -> float:
        """``num_params / dense_params``: the kept fraction of the reference budget."""
        dense = self.dense_params
        return self.num_params / dense if dense else 0.0

    # -------------------------------------------------------------- matrices
    def edge_list(self, *, weighted: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directed edges ``(src_node, dst_node, weight)`` of every block, duplicates kept."""
        rows, cols, data = [], [], []
        for b in self.blocks:
            src, dst = self.group(b.src), self.group(b.dst)
            r, c, w = b.local_pairs(src.size, dst.size)
            rows.append(r + dst.start)
            cols.append(c + src.start)
            data.append(w if weighted else np.ones(r.size))
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        return np.concatenate(cols), np.concatenate(rows), np.concatenate(data)

    def adjacency(self, *, weighted: bool = False) -> sp.csr_array:
        """Symmetric adjacency ``W``, shape ``(n, n)``, float64 CSR, no self-loops.

        Binary (``weighted=False``): 1 where any block joins the pair. Weighted: the sum over
        blocks of ``|w|`` over the kept taps of each channel pair; a residual edge weighs 1.
        The result is in canonical form (sorted column indices, no duplicates), cached and
        read-only; copy it before editing.

        Notes
        -----
        Built row range by row range (a node group, or a slice of one holding at most
        :data:`_CHUNK_ENTRIES` entries): each range gathers the entries of the blocks that touch
        its group, merges duplicates and is written into arrays sized once for the whole matrix.
        No edge list of the whole graph is held, so the peak memory stays within the final CSR
        plus one range's temporaries (benchmarks/adjacency.py measures it on a 50M-edge graph).
        """
        key = ("adjacency", bool(weighted))
        if key not in self._cache:
            if weighted:
                missing = [b.name for b in self.blocks if b.mask is not None and b.pair_weight is None]
                if missing:
                    raise ValueError(
                        f"weighted adjacency needs weights, but blocks {missing} have none; "
                        "trace the graph from a model with weights or use weighted=False"
                    )
            mat = _symmetric_csr(self, weighted)
            for arr in (mat.data, mat.indices, mat.indptr):
                arr.flags.writeable = False
            self._cache[key] = mat
        return self._cache[key]

    def to_networkx(self, *, weighted: bool = False):
        """An undirected ``networkx.Graph``; node ``i`` has attributes ``group`` and ``index``
        (position in its group), edges a ``weight``."""
        import networkx as nx

        graph = nx.Graph()
        for g in self.groups:
            graph.add_nodes_from((g.start + i, {"group": g.name, "index": i}) for i in range(g.size))
        coo = self.adjacency(weighted=weighted).tocoo()
        upper = coo.row < coo.col
        graph.add_weighted_edges_from(
            zip(coo.row[upper].tolist(), coo.col[upper].tolist(), coo.data[upper].tolist())
        )
        return graph

    # ------------------------------------------------------------------ edits
    def replace(
        self,
        *,
        blocks: Iterable[EdgeBlock] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> NetworkGraph:
        """A new graph with the same groups and other blocks and/or provenance."""
        return NetworkGraph(
            self.groups,
            tuple(self.blocks if blocks is None else blocks),
            dict(self.provenance if provenance is None else provenance),
        )

    def with_blocks(self, extra: Iterable[EdgeBlock], **provenance: Any) -> NetworkGraph:
        """A new graph with ``extra`` blocks appended (provenance updated by keywords)."""
        return self.replace(
            blocks=self.blocks + tuple(extra), provenance={**self.provenance, **provenance}
        )

    # --------------------------------------------------------------- equality
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NetworkGraph):
            return NotImplemented
        if [(g.name, g.start, g.size) for g in self.groups] != [
            (g.name, g.start, g.size) for g in other.groups
        ]:
            return False
        if len(self.blocks) != len(other.blocks):
            return False
        return all(a.same_topology(b) for a, b in zip(self.blocks, other.blocks))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kinds = {k: len(self.blocks_of_kind(k)) for k in BLOCK_KINDS}
        model = self.provenance.get("model", "?")
        return (
            f"NetworkGraph(model={model!r}, groups={len(self.groups)}, nodes={self.num_nodes}, "
            f"blocks={kinds}, params={self.num_params}, density={self.density:.4g})"
        )


# ------------------------------------------------------------------ adjacency, range by range
#: Most directed entries one row range of :meth:`NetworkGraph.adjacency` gathers at a time (a
#: group holding more is split into row slices). Each entry costs about 50 bytes of temporaries
#: (int64 pair indices, the range's COO and CSR), so a range stays near 200 MB whatever the
#: graph's size; ranges are group slices, so most graphs take one range per group.
_CHUNK_ENTRIES = 1 << 22


def _pair_rows(block: EdgeBlock, r0: int, r1: int) -> np.ndarray:
    """Channel-pair mask of the block's rows ``r0:r1`` (a view of the mask, reduced over taps)."""
    rows = block.mask[r0:r1]
    return rows.reshape(r1 - r0, rows.shape[1] // block.fold, -1).any(axis=2)


def _pair_columns(block: EdgeBlock, c0: int, c1: int) -> np.ndarray:
    """Channel-pair mask of the block's source channels ``c0:c1`` (``conv_groups == 1``)."""
    f = block.fold
    cols = block.mask[:, c0 * f : c1 * f]
    return cols.reshape(cols.shape[0], c1 - c0, -1).any(axis=2)


def _entries(block: EdgeBlock, src: NodeGroup, dst: NodeGroup, end: str, lo: int, hi: int,
             weighted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries ``(row - lo, column, weight)`` of the adjacency that ``block`` puts in the rows
    ``lo:hi`` (node indices inside its ``end`` group, ``"dst"`` or ``"src"``)."""
    if block.mask is None:  # residual: at most one pair per source node, all of them at once
        j, i, _ = block.local_pairs(src.size, dst.size)
        if end == "dst":
            keep = (j >= lo - dst.start) & (j < hi - dst.start)
            rows, cols = j[keep] + dst.start - lo, i[keep] + src.start
        else:
            keep = (i >= lo - src.start) & (i < hi - src.start)
            rows, cols = i[keep] + src.start - lo, j[keep] + dst.start
        return rows, cols, np.ones(rows.size)
    out_per_group = block.mask.shape[0] // block.conv_groups
    in_per_group = block.mask.shape[1] // block.fold
    if end == "dst":
        r0 = lo - dst.start
        o, c = np.nonzero(_pair_rows(block, r0, hi - dst.start))
        o_all = o + r0
        w = block.pair_weight[o_all, c].astype(np.float64) if weighted else np.ones(o.size)
        if block.conv_groups > 1:
            c = c + (o_all // out_per_group) * in_per_group
        return o, c + src.start, w
    a, b = lo - src.start, hi - src.start
    if block.conv_groups == 1:
        o, c = np.nonzero(_pair_columns(block, a, b))
        w = block.pair_weight[o, c + a].astype(np.float64) if weighted else np.ones(o.size)
        return c, o + dst.start, w
    o0 = (a // in_per_group) * out_per_group  # the output channels whose conv group reads a:b
    o1 = ((b - 1) // in_per_group + 1) * out_per_group
    o, c = np.nonzero(_pair_rows(block, o0, o1))
    o += o0
    s = c + (o // out_per_group) * in_per_group
    keep = (s >= a) & (s < b)
    o, c, s = o[keep], c[keep], s[keep]
    w = block.pair_weight[o, c].astype(np.float64) if weighted else np.ones(o.size)
    return s - a, o + dst.start, w


def _row_entries(graph: NetworkGraph) -> np.ndarray:
    """Adjacency entries of every row before duplicates merge, shape ``(n,)``, int64."""
    deg = np.zeros(graph.num_nodes, dtype=np.int64)
    for b in graph.blocks:
        src, dst = graph.group(b.src), graph.group(b.dst)
        if b.mask is None:
            j, i, _ = b.local_pairs(src.size, dst.size)
            deg[src.start + i] += 1  # at most one pair per source node
            deg[dst.start : dst.stop] += np.bincount(j, minlength=dst.size)
            continue
        pm = b.pair_mask()
        deg[dst.start : dst.stop] += pm.sum(axis=1)
        per_src = pm.reshape(b.conv_groups, -1, pm.shape[1]).sum(axis=1).reshape(-1)
        deg[src.start : src.stop] += per_src
    return deg


def _row_ranges(start: int, stop: int, deg: np.ndarray, cap: int):
    """Slices ``lo:hi`` of the rows ``start:stop`` holding at most ``cap`` entries each (or one row)."""
    cum = np.cumsum(deg[start:stop])
    lo = start
    while lo < stop:
        base = int(cum[lo - start - 1]) if lo > start else 0
        hi = start + int(np.searchsorted(cum, base + cap, side="right"))
        hi = min(max(hi, lo + 1), stop)
        yield lo, hi
        lo = hi


def _symmetric_csr(graph: NetworkGraph, weighted: bool) -> sp.csr_array:
    """The adjacency of :meth:`NetworkGraph.adjacency`, built row range by row range into arrays
    sized once (entries before merging duplicates) and shrunk in place at the end."""
    n = graph.num_nodes
    deg = _row_entries(graph)
    total = int(deg.sum())
    idx = np.int32 if max(n, total) < 2**31 - 1 else np.int64
    indptr = np.zeros(n + 1, dtype=idx)
    indices = np.empty(total, dtype=idx)
    data = np.empty(total, dtype=np.float64)
    touching: dict[str, list[tuple[EdgeBlock, str]]] = {g.name: [] for g in graph.groups}
    for b in graph.blocks:
        touching[b.dst].append((b, "dst"))
        touching[b.src].append((b, "src"))
    for ends in touching.values():  # by the column range they fill: rows come out sorted
        ends.sort(key=lambda item: graph.group(item[0].src if item[1] == "dst" else item[0].dst).start)
    pos = 0
    for g in graph.groups:
        for lo, hi in _row_ranges(g.start, g.stop, deg, _CHUNK_ENTRIES):
            parts = [_entries(b, graph.group(b.src), graph.group(b.dst), end, lo, hi, weighted)
                     for b, end in touching[g.name]]
            parts = [p for p in parts if p[0].size]
            if not parts:
                indptr[lo + 1 : hi + 1] = pos
                continue
            rows = np.concatenate([p[0] for p in parts]).astype(idx, copy=False)
            cols = np.concatenate([p[1] for p in parts]).astype(idx, copy=False)
            vals = np.concatenate([p[2] for p in parts])
            del parts
            chunk = sp.coo_array((vals, (rows, cols)), shape=(hi - lo, n)).tocsr()
            del rows, cols, vals
            chunk.sum_duplicates()
            if weighted:
                chunk.eliminate_zeros()
            else:
                chunk.data[:] = 1.0
            k = chunk.nnz
            indices[pos : pos + k] = chunk.indices
            data[pos : pos + k] = chunk.data
            indptr[lo + 1 : hi + 1] = pos + chunk.indptr[1:]
            pos += k
            del chunk
    indices.resize(pos, refcheck=False)  # shrinks in place (realloc): no second copy
    data.resize(pos, refcheck=False)
    mat = sp.csr_array((data, indices, indptr), shape=(n, n))
    mat.has_canonical_format = True  # every range is sorted and merged
    return mat
