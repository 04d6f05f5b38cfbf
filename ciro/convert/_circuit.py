"""Linear models and tree ensembles as ONNX graphs of plain tensor operators, which EZKL can prove.

skl2onnx and onnxmltools write these models with ``ai.onnx.ml`` operators (``LinearClassifier``,
``TreeEnsembleClassifier``, ...) that EZKL has no circuit for. Here the same computation is written with
MatMul, Add, Less, Relu, Exp, Div, ArgMax and Gather, from an intermediate form the framework readers
(``_circuit_sk``, ``_circuit_gbm``) fill in:

* a linear model: ``raw = x @ W + b``;
* a tree ensemble, compiled to tensors as Hummingbird does but with gathers where it multiplies by a dense
  path matrix (EZKL pays for every product of a dense matrix; gathering at constant indices costs almost
  nothing): every split's condition at once, ``cond = x[:, feature] < threshold`` (one float32 comparison per
  split: each reader turns its library's ``<=``/``<`` and float64 thresholds into an exactly equivalent strict
  float32 one); for each leaf the conditions on its path, taken from ``[cond, 1 - cond]`` (left or right turn),
  summed: the leaf is reached when all ``depth`` of them hold, ``reached = relu(held - depth + 1)`` (1 for the
  one leaf per tree, 0 for the others); ``raw = reached @ V + base`` sums the trees' leaf values (already
  scaled: averaging, learning rate).

Then the link: ``identity`` (a regressor's output ``variable``), ``probability`` (the raw outputs are class
probabilities already: a forest's averaged leaf frequencies), ``softmax`` (class probabilities, see
:func:`_softmax`), ``logistic`` (one score ``z``: probabilities ``softmax([-z/2, z/2]) = [1 - sigmoid(z),
sigmoid(z)]``, the same exponential lookup), or ``decision`` (a classifier without probabilities: the label
alone). A classifier's ``label`` is ``classes[argmax(...)]``, as float32 (EZKL proves float
outputs at the model's fixed-point scale; an integer output would be proven at scale 1, a loose bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InvalidModelError

__all__ = ["CIRCUIT_OPSET", "CIRCUIT_TOOL", "Circuit", "Link", "Tree", "build", "strict_below"]

#: The main opset of the circuit graphs (EZKL 23 reads up to opset 18; 17 is what the other converters write).
CIRCUIT_OPSET = 17
#: How the circuit form is made, for messages.
CIRCUIT_TOOL = "Ciro's circuit form (plain tensor operators)"
Link = Literal["identity", "probability", "softmax", "logistic", "decision"]


def strict_below(threshold: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """float32 thresholds ``u`` such that, for every float32 ``x``, ``x < u`` decides the same as the library's
    comparison of ``x`` with ``threshold`` (``x <= threshold`` when ``inclusive``, else ``x < threshold``),
    computed in float64 as scikit-learn and LightGBM do (XGBoost's float32 thresholds pass through unchanged)."""
    t = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    if inclusive:  # x <= t  <=>  x <= largest float32 not above t  <=>  x < the next float32 above it
        floor = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
        return np.nextafter(floor, np.float32(np.inf)).astype(np.float32)
    # x < t  <=>  x < smallest float32 not below t
    return np.where(t32.astype(np.float64) < t, np.nextafter(t32, np.float32(np.inf)), t32).astype(np.float32)


@dataclass(frozen=True)
class Tree:
    """One binary decision tree in scikit-learn's array layout: node ``i`` is a leaf when ``left[i] < 0``; an
    internal node sends a row left when ``x[feature[i]] < threshold[i]`` (strict, float32) and right otherwise;
    ``value[i]`` is a leaf's contribution to each raw output column."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray

    def leaves(self) -> list[tuple[int, list[tuple[int, bool]]]]:
        """Each leaf (node index) with its path: (internal node index, went left) from the root down."""
        out: list[tuple[int, list[tuple[int, bool]]]] = []
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if self.left[node] < 0:
                out.append((node, path))
                continue
            stack.append((int(self.right[node]), [*path, (node, False)]))
            stack.append((int(self.left[node]), [*path, (node, True)]))
        return out

    @property
    def internal(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.left) >= 0)

    @property
    def depth(self) -> int:
        return max(len(p) for _, p in self.leaves())


@dataclass(frozen=True)
class Circuit:
    """What a converted model computes, before it is written as ONNX: an optional per-feature affine step
    (scalers), then a linear model (``weights``/``bias``) or a tree ensemble (``trees`` + ``base``), then the
    link; ``classes`` (a classifier's labels, numbers) or None for a regressor."""

    n_features: int
    link: Link
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    trees: list[Tree] = field(default_factory=list)
    base: np.ndarray | None = None
    classes: np.ndarray | None = None
    #: x * scale + offset, per feature, before the model (a scaler in a Pipeline).
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    #: What it is, for messages: "RandomForestClassifier (5 trees, depth <= 3)".
    what: str = ""

    @property
    def n_raw(self) -> int:
        if self.weights is not None:
            return int(self.weights.shape[1])
        return int(np.asarray(self.trees[0].value).shape[1])


class _Graph:
    """Nodes and initializers of one ONNX graph, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, value: np.ndarray, name: str) -> str:
        from onnx import numpy_helper

        self._n += 1
        full = f"{name}_{self._n}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), full))
        return full

    def op(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = f"{name}_{self._n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _tree_tensors(trees: list[Tree], n_raw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The constants of the path form: each internal node's feature and threshold (all trees' nodes in one
    row), for each leaf the ``depth`` column indices of its path conditions into ``[cond, 1 - cond]`` (a path
    shorter than the deepest one repeats its last condition, which leaves "all of them hold" unchanged), and
    the leaves' values [leaves, n_raw]."""
    feature: list[int] = []
    threshold: list[float] = []
    paths: list[list[int]] = []
    values: list[np.ndarray] = []
    per_tree = [(t, t.internal, t.leaves()) for t in trees]
    total = sum(len(internal) for _, internal, _ in per_tree)
    depth = max(len(p) for _, _, leaves in per_tree for _, p in leaves)
    for tree, internal, leaves in per_tree:
        slot = {int(node): len(feature) + j for j, node in enumerate(internal)}
        feature += [int(f) for f in np.asarray(tree.feature)[internal]]
        threshold += [float(v) for v in np.asarray(tree.threshold, np.float32)[internal]]
        for leaf, path in leaves:
            cols = [slot[node] if went_left else total + slot[node] for node, went_left in path]
            paths.append(cols + [cols[-1]] * (depth - len(cols)))
            values.append(np.asarray(tree.value, np.float64)[leaf])
    return (np.asarray(feature, np.int64), np.asarray(threshold, np.float32)[None],
            np.asarray(paths, np.int64).reshape(-1), np.asarray(values, np.float32).reshape(len(paths), n_raw), depth)


def _refuse_oversized(c: Circuit, trees: list[Tree]) -> None:
    """Refuse, before the (large) constants are built, an ensemble whose circuit would be far above the largest
    Ciro sets up. Rows per proof, as EZKL 23 lays this graph out (within ~10% of its count on forests of 5 to 300
    trees, depth 3 to 10): ~11 per comparison, ~10 per leaf (relu), one per leaf and path step (the sum)."""
    from ..zk import MAX_ZK_ROWS

    nodes = sum(len(t.internal) for t in trees)
    leaves = [len(t.leaves()) for t in trees]
    depth = max(t.depth for t in trees)
    rows = 11 * nodes + 10 * sum(leaves) + sum(leaves) * depth
    if rows > MAX_ZK_ROWS:
        raise InvalidModelError(
            f"{c.what or 'The tree ensemble'} has {len(trees)} trees with {nodes:,} splits and {sum(leaves):,} leaves "
            f"(depth up to {depth}): its circuit would have about {rows:,} rows, more than the {MAX_ZK_ROWS:,} (2^19) "
            "Ciro sets up (the set-up and every proof would take too long and too much memory). Train fewer or "
            "shallower trees (n_estimators, max_depth / num_leaves), or use receipt or quorum verification.",
            detail={"estimated_rows": rows, "max_rows": MAX_ZK_ROWS})


def _raw(g: _Graph, c: Circuit, x: str) -> str:
    if c.scale is not None and c.offset is not None:
        x = g.op("Mul", [x, g.const(np.asarray(c.scale, np.float32)[None], "scale")], "scaled")
        x = g.op("Add", [x, g.const(np.asarray(c.offset, np.float32)[None], "offset")], "shifted")
    if c.weights is not None:
        raw = g.op("MatMul", [x, g.const(np.asarray(c.weights, np.float32), "weights")], "xw")
        bias = np.zeros(c.n_raw) if c.bias is None else np.asarray(c.bias)
        return g.op("Add", [raw, g.const(bias.astype(np.float32)[None], "bias")], "raw")
    if not c.trees:
        raise InvalidModelError(f"{c.what or 'The model'} has neither weights nor trees: nothing to convert.")
    base = np.zeros(c.n_raw) if c.base is None else np.asarray(c.base, np.float64).reshape(-1)
    trees = [t for t in c.trees if len(t.internal)]
    for t in c.trees:  # a tree that is a single leaf adds a constant
        if not len(t.internal):
            base = base + np.asarray(t.value, np.float64)[0]
    if not trees:
        raise InvalidModelError(f"{c.what or 'The model'} has no split in any tree: it predicts a constant, which "
                                "needs no proof. Deploy it with verification 'receipt'.")
    _refuse_oversized(c, trees)
    feature, threshold, paths, values, depth = _tree_tensors(trees, c.n_raw)
    leaves = len(values)
    picked = g.op("Gather", [x, g.const(feature, "feature")], "picked", axis=1)       # [N, nodes]
    cond = g.op("Cast", [g.op("Less", [picked, g.const(threshold, "threshold")], "less")], "cond", to=1)
    # 1 - cond, written as -cond + 1: EZKL 23.0.5 lays Sub(constant, x) out differently from run to run here (its
    # row count then varies, and a verifier re-deriving the settings would reject honest proofs); Neg + Add is stable
    other = g.op("Add", [g.op("Neg", [cond], "negcond"), g.const(np.ones((1, 1), np.float32), "one")], "notcond")
    both = g.op("Concat", [cond, other], "both", axis=1)                              # [N, 2 * nodes]
    hits = g.op("Gather", [both, g.const(paths, "paths")], "onpath", axis=1)          # [N, leaves * depth]
    hits = g.op("Reshape", [hits, g.const(np.array([-1, leaves, depth], np.int64), "shape")], "onpath3")
    held = g.op("ReduceSum", [hits, g.const(np.array([2], np.int64), "axis")], "held", keepdims=0)
    # depth conditions held: 1; fewer: 0 or below. One leaf per tree reaches 1.
    sel = g.op("Relu", [g.op("Add", [held, g.const(np.array([[1.0 - depth]], np.float32), "depth")], "margin")],
               "reached")
    raw = g.op("MatMul", [sel, g.const(values, "leaves")], "leafsum")                 # [N, n_raw]
    return g.op("Add", [raw, g.const(base.astype(np.float32)[None], "base")], "raw")


#: Softmax inputs are clipped to [max - SOFTMAX_SPAN, max]: a class further below the top one than that gets
#: exp(-12) = 6e-6 of its probability, below the proof's fixed-point resolution.
SOFTMAX_SPAN = 12.0


def _softmax(g: _Graph, logits: str, width: int) -> str:
    """softmax(logits), written so that EZKL's exponential lookup table always covers what a proof meets,
    whatever the input, and stays small. EZKL 23.0.5 sizes that table from the values calibration sees (twice
    their range), and a proof whose exponent falls outside it does not finish (it hangs). So the logits are
    shifted by their max and clipped to [-SOFTMAX_SPAN, 0], and a constant extra column at -SOFTMAX_SPAN / 2
    goes through the exponential too, which shows calibration that range whatever its sample (EZKL doubles it
    to the full span: a 2^15-row table at its usual scale, where a column at the full span needs 2^16). That
    column is dropped before the normalisation, so it changes nothing."""
    top = g.op("ReduceMax", [logits], "top", axes=[1], keepdims=1)
    shifted = g.op("Sub", [logits, top], "shifted")
    lo = g.const(np.array(-SOFTMAX_SPAN, np.float32), "lo")
    clipped = g.op("Clip", [shifted, lo, g.const(np.array(0.0, np.float32), "hi")], "clipped")
    probe = g.op("Add", [g.op("Mul", [top, g.const(np.zeros((1, 1), np.float32), "zero")], "nil"),
                         g.const(np.full((1, 1), -SOFTMAX_SPAN / 2, np.float32), "floor")], "probe")
    powers = g.op("Exp", [g.op("Concat", [clipped, probe], "padded", axis=1)], "powers")
    start, end, axes = (g.const(np.array([v], np.int64), n) for v, n in ((0, "start"), (width, "end"), (1, "axes")))
    kept = g.op("Slice", [powers, start, end, axes], "kept")
    total = g.op("ReduceSum", [kept, g.const(np.array([1], np.int64), "axis")], "total", keepdims=1)
    return g.op("Div", [kept, total], "probabilities")


def build(c: Circuit, *, input_name: str = "x") -> bytes:
    """The ONNX bytes of ``c``: outputs ``label`` (float32 [N]) and ``probabilities`` (float32 [N, classes]) for
    a classifier with probabilities, ``label`` alone for one without (link ``decision``), ``variable``
    (float32 [N, outputs]) for a regressor."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    raw = _raw(g, c, input_name)
    outputs: list[tuple[str, str, list[str | int | None]]] = []
    if c.classes is None:
        if c.link != "identity":
            raise InvalidModelError(f"{c.what}: a regressor's link must be the identity, not {c.link!r}.")
        outputs.append(("variable", raw, ["N", c.n_raw]))
    else:
        classes = np.asarray(c.classes, np.float64).reshape(-1)
        probs: str | None = None
        if c.link == "probability":  # the raw outputs are probabilities already (averaged forests)
            scores = probs = raw
        elif c.link in ("logistic", "decision") and c.n_raw == 1:
            # one score z: softmax([-z/2, z/2]) is [1 - sigmoid(z), sigmoid(z)]; argmax picks class 1 iff z > 0,
            # as the libraries do (a tie goes to class 0)
            scores = g.op("MatMul", [raw, g.const(np.array([[-0.5, 0.5]], np.float32), "halves")], "pair")
            probs = _softmax(g, scores, 2) if c.link == "logistic" else None
        elif c.link in ("softmax", "decision"):
            scores, probs = raw, _softmax(g, raw, len(classes)) if c.link == "softmax" else None
        else:
            raise InvalidModelError(f"{c.what}: link {c.link!r} with {c.n_raw} scores is not a classifier Ciro "
                                    "can write as a circuit.")
        # the label from the raw scores (not from rounded probabilities), as the libraries decide it
        index = g.op("ArgMax", [scores], "index", axis=1, keepdims=0)
        label = g.op("Gather", [g.const(classes.astype(np.float32), "classes"), index], "label", axis=0)
        outputs.append(("label", label, ["N"]))
        if probs is not None:
            outputs.append(("probabilities", probs, ["N", len(classes)]))
    for name, tensor, _ in outputs:  # the outputs' public names
        g.nodes.append(helper.make_node("Identity", [tensor], [name], name=f"out_{name}"))
    graph = helper.make_graph(
        g.nodes, "ciro_circuit", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", c.n_features])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, _, shape in outputs], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", CIRCUIT_OPSET)],
                              producer_name="ciro.convert", doc_string=c.what)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
