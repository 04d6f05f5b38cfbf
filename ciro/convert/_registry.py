"""The converter interface, the registry, and the check every conversion passes before anything is deployed."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, InvalidModelError

__all__ = [
    "CHECK_ROWS",
    "CONVERTERS",
    "DEFAULT_INPUT",
    "Converted",
    "Converter",
    "Example",
    "Reference",
    "Tolerance",
    "check",
    "converters",
    "get_converter",
    "onnx_run",
    "random_rows",
    "register",
]

#: The entry point group through which plugins add converters (name = framework, value = a :class:`Converter`
#: or a callable returning one).
CONVERTERS = "ciro.converters"
#: How many example rows the check runs when the caller gives none.
CHECK_ROWS = 8
#: The ONNX input name of a converted model fed one array (a dict of arrays names its inputs itself).
DEFAULT_INPUT = "x"

#: Example rows by ONNX input name, in the model's input order.
Example = dict[str, np.ndarray]
#: What the original computes, by ONNX output name or position (0: the first output).
Reference = Mapping[str | int, np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    """When the converted model agrees with the original: float outputs within ``numpy.allclose(onnx, original,
    rtol, atol)``; integer, boolean and string outputs (labels) equal."""

    rtol: float = 1e-4
    atol: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.rtol >= 0 and self.atol >= 0):
            raise InputError(f"A tolerance needs rtol >= 0 and atol >= 0, not rtol={self.rtol}, atol={self.atol}.")

    def __str__(self) -> str:
        return f"rtol={self.rtol:g}, atol={self.atol:g}"


@dataclass(frozen=True)
class Converter:
    """How one framework's models become ONNX, and what the converted model must reproduce.

    ``load(path)`` reads a saved model (only files whose suffix is in ``suffixes``; an empty tuple takes any
    name). ``to_onnx(model, example)`` returns ONNX bytes whose inputs are named as ``example``'s keys.
    ``reference(model, example)`` returns what the original model computes on the example rows, by the name or
    position of the ONNX output it must equal; the first entry is what the original's ``predict`` (or forward call)
    returns. A converter
    without ``reference`` deploys the model as it is (ONNX itself). ``n_features(model)`` is the width of one input
    row when the model knows it (random example rows are then made); None: the caller must give an example.
    ``dtype``: example rows are cast to it before converting and checking (None: kept as given).
    ``circuit(model, example)``, when given, is the conversion used for zk deployments: ONNX bytes of plain tensor
    operators that EZKL can prove, with the same outputs in the same order as ``to_onnx``'s (labels may be float32
    class values), checked against the same ``reference``. Without it a zk deployment uses ``to_onnx``.
    """

    name: str
    suffixes: tuple[str, ...]
    load: Callable[[Path], Any]
    to_onnx: Callable[[Any, Example], bytes]
    reference: Callable[[Any, Example], Reference] | None = None
    tolerance: Tolerance = Tolerance()
    n_features: Callable[[Any], int | None] | None = None
    dtype: str | None = "float32"
    #: What converts it, for messages: "skl2onnx", "onnxmltools", "torch.onnx.export".
    tool: str = ""
    #: What to install when ``to_onnx`` or ``load`` meets a missing import.
    install: str = ""
    aliases: tuple[str, ...] = ()
    circuit: Callable[[Any, Example], bytes] | None = None


@dataclass(frozen=True)
class Converted:
    onnx: bytes
    #: What was checked and how closely the results agreed (shown to the user).
    check: str
    #: Largest absolute difference between the original's and the result's float outputs on the example rows.
    max_abs_diff: float = 0.0
    #: framework, tool, rows, tolerance, and per compared output its comparison and difference.
    details: dict[str, Any] = field(default_factory=dict)
    #: The ONNX output that equals the original model's prediction (None: not compared).
    prediction: str | None = None


_REGISTRY: dict[str, Converter] = {}
_ALIASES: dict[str, str] = {}
_STATE = {"builtins": False, "plugins": False}
#: Names registered from entry points (a reload does not load them twice).
_FROM_PLUGINS: set[str] = set()


def register(converter: Converter, *, replace: bool = False) -> None:
    """Add a converter under its name and aliases. A taken name is refused unless ``replace``."""
    if not isinstance(converter, Converter):
        raise ConfigError(f"register() takes a ciro.convert.Converter, not {type(converter).__name__}. Build one "
                          "with Converter(name=..., suffixes=..., load=..., to_onnx=..., reference=...).")
    names = [converter.name.lower(), *(a.lower() for a in converter.aliases)]
    _ensure_builtins()
    taken = [n for n in names if n in _ALIASES]
    if taken and not replace:
        raise ConfigError(f"A converter named {taken[0]!r} is registered already. Pick another name, or pass "
                          "replace=True to replace it.")
    _REGISTRY[names[0]] = converter
    for n in names:
        _ALIASES[n] = names[0]


def _ensure_builtins() -> None:
    if not _STATE["builtins"]:
        _STATE["builtins"] = True
        from ._builtin import BUILTINS
        from ._circuits import CIRCUITS
        from ._trees import TREES

        for conv in (*BUILTINS, *TREES):  # the built-in frameworks' circuit forms (for zk) live beside them
            register(dataclasses.replace(conv, circuit=CIRCUITS.get(conv.name, conv.circuit)))


def _load_plugins() -> None:
    from ..plugins import load_entry_points

    _STATE["plugins"] = True
    for name, obj in load_entry_points(CONVERTERS, warn=_warn, skip=lambda n: n.lower() in _FROM_PLUGINS):
        try:
            conv = obj if isinstance(obj, Converter) else obj()
            if not isinstance(conv, Converter):
                raise TypeError(f"it gave a {type(conv).__name__}, not a ciro.convert.Converter")
            if conv.name.lower() != name.lower():
                raise TypeError(f"the entry point is named {name!r} but its converter {conv.name!r}")
            register(conv)
            _FROM_PLUGINS.add(name.lower())
        except Exception as exc:  # a broken optional plugin warns; it does not break the core
            _warn(f"the {name!r} converter plugin (entry point group {CONVERTERS}) was skipped: {exc}")


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def converters(*, reload: bool = False) -> dict[str, Converter]:
    """Every registered converter by name: the built-ins, then the ``ciro.converters`` plugins (loaded on the first
    call; ``reload=True`` looks for newly installed ones)."""
    _ensure_builtins()
    if reload or not _STATE["plugins"]:
        _load_plugins()
    return dict(_REGISTRY)


#: Frameworks Ciro has no converter for, and what to do instead.
_ELSEWHERE = {
    "transformers": "deploy a Hugging Face model folder with `ciro hf deploy FOLDER` (the hf extra)",
    "tensorflow": "convert it with tf2onnx and deploy the ONNX file",
    "keras": "convert it with tf2onnx and deploy the ONNX file",
    "catboost": "export it with model.save_model(path, format='onnx') and deploy the ONNX file",
}


def get_converter(framework: str) -> Converter:
    """The converter registered for ``framework`` (a name or alias, any case)."""
    name = str(framework).lower()
    found = converters()
    if name not in _ALIASES:
        listed = ", ".join(sorted(found))
        hint = f" To deploy a {framework} model, {_ELSEWHERE[name]}." if name in _ELSEWHERE else ""
        raise InputError(f"Unknown framework {framework!r}: no converter of that name is registered (registered: "
                         f"{listed}).{hint} A plugin can add one through the {CONVERTERS} entry point group.")
    return found[_ALIASES[name]]


def random_rows(n_features: int | Sequence[int], rows: int = CHECK_ROWS) -> np.ndarray:
    """Seeded standard-normal rows of the given width (or of the given shape after the batch dimension)."""
    tail = [int(n_features)] if isinstance(n_features, int | np.integer) else [int(d) for d in n_features]
    return np.random.default_rng(0).standard_normal((rows, *tail)).astype(np.float32)


def onnx_run(data: bytes, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ONNX model's outputs by name on ``feeds`` (onnxruntime, CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # converters' declared shapes can be stricter than their outputs: no warnings
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return {n: np.asarray(v) for n, v in zip(names, sess.run(names, dict(feeds)), strict=True)}


def _compare(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> tuple[bool, float, str]:
    """(agrees, largest absolute difference, what differed) for one output."""
    if got.size != want.size:
        return False, float("inf"), f"shape {tuple(got.shape)} where the original gives {tuple(want.shape)}"
    g, w = got.reshape(want.shape), want
    if w.dtype.kind in "iub" and g.dtype.kind == "f":  # labels written as float32 class values: equal, exactly
        bad = int(np.sum(g.astype(np.float64) != w.astype(np.float64)))
        return bad == 0, 0.0 if bad == 0 else float("inf"), f"{bad} of {w.size} labels differ"
    if w.dtype.kind in "fc" or g.dtype.kind in "fc":
        gf, wf = g.astype(np.float64), w.astype(np.float64)
        diff = float(np.max(np.abs(gf - wf), initial=0.0))
        return bool(np.allclose(gf, wf, rtol=tol.rtol, atol=tol.atol)), diff, f"max abs diff {diff:.3g}"
    same = (g.astype(str) == w.astype(str)) if w.dtype.kind in "OUS" or g.dtype.kind in "OUS" else (g == w)
    rows = same.reshape(len(same), -1).all(axis=1) if same.ndim else np.asarray([bool(same)])
    bad = int((~rows).sum())
    return bad == 0, 0.0 if bad == 0 else float("inf"), f"{bad} of {len(rows)} rows differ"


def check(data: bytes, example: Example, want: Reference, tol: Tolerance, *,
          what: str) -> tuple[float, dict[str, Any]]:
    """Run the ONNX model on ``example`` and compare each output ``want`` names; raise InvalidModelError with the
    measured difference when one does not agree within ``tol``. Returns (largest float difference, details); the
    details' ``outputs`` list the compared outputs by name, the original's prediction first."""
    try:
        got = onnx_run(data, example)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise InvalidModelError(f"The ONNX conversion of {what} does not run in onnxruntime "
                                f"({str(exc).splitlines()[0][:300]}). Nothing was deployed; export it to ONNX "
                                "yourself and deploy the ONNX file.") from exc
    strings = [n for n, v in got.items() if v.dtype.kind in "OUS"]
    if strings:
        raise InvalidModelError(f"The ONNX conversion of {what} outputs strings ({strings}), which Ciro does not "
                                "carry. Encode string class labels as integers (e.g. LabelEncoder), train on those, "
                                "and convert again.")
    names = list(got)
    rows = len(next(iter(example.values())))
    outputs: dict[str, Any] = {}
    worst = 0.0
    for key, expected in want.items():
        name = names[key] if isinstance(key, int) and 0 <= key < len(names) else key
        if name not in got:
            raise InvalidModelError(f"The ONNX conversion of {what} has no output {key!r} (it has {names}). "
                                    "Nothing was deployed.")
        w = np.asarray(expected)
        ok, diff, said = _compare(got[str(name)], w, tol)
        outputs[str(name)] = {"compare": "allclose" if w.dtype.kind in "fc" else "equal", "max_abs_diff": diff}
        if not ok:
            raise InvalidModelError(
                f"The ONNX conversion of {what} differs from the original on {rows} example rows: output {name!r} "
                f"has {said} (tolerance {tol}; labels must be equal). Nothing was deployed. Check the example "
                "input, raise the tolerance if that difference is acceptable, or export it to ONNX yourself.",
                detail={"output": name, "max_abs_diff": diff if np.isfinite(diff) else None, "rows": rows})
        if w.dtype.kind in "fc":
            worst = max(worst, diff)
    return worst, {"rows": rows, "rtol": tol.rtol, "atol": tol.atol, "outputs": outputs}
