"""The ``%ciro`` line and cell magic: infer, deploy, jobs, status, verify, config, help.

User mistakes (bad arguments, an unknown model or variable, no gateway) raise IPython's ``UsageError``: the
message, no traceback. Results are Python objects: ``r = %ciro infer MODEL x`` binds a ``JobResult``.

``%ciro infer``'s INPUT is Python (``X[:3]``, ``np.ones((1, 4), np.float32)``), so the magic opts out of IPython's
``$name``/``{expr}`` expansion, as ``%timeit`` does, and expands only the words that are not Python itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import threading
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display
from IPython.utils.text import DollarFormatter

from ciro import (
    CiroClient,
    CiroError,
    Config,
    JobResult,
    ModelInfo,
    Processor,
    VerificationLevel,
    VerificationReport,
    is_raw,
    resolve_model,
    verify,
)

from .inputs import cell_input, line_input, python_words
from .widgets import JobBox, JobsTable, ResultCard, StatusLine, watch

__all__ = ["CiroMagics", "JobHandle"]

HELP = """%ciro: run verifiable inference from the notebook.

  %ciro infer MODEL INPUT [--verify receipt|quorum|zk|none] [--gpu] [--gpu-model NAME] [--gpu-memory-gb N]
             [--cpu-only] [--async] [--max-payment N] [--timeout S]
      MODEL: a deployed model's name or hash, an ONNX file (deployed first), or a Hugging Face repo id when the
      hf plugin is installed. INPUT: any Python expression in the notebook's namespace (x, X[:3],
      np.ones((1, 4), np.float32), "some text": an array, DataFrame, list or string) or an existing file (.npy,
      .npz, .json, .csv, .txt); options may come before or after it. Hardware: --gpu a worker holding a GPU share,
      --gpu-model one whose GPU's name contains NAME (e.g. H100), --gpu-memory-gb at least N GB of GPU memory in
      its share, --cpu-only one without a GPU.
      Returns a JobResult (with --async: a JobHandle; .result() waits).
  %%ciro infer MODEL [options]       the cell body is the input: JSON, a Python expression, or plain text
  %ciro deploy PATH [--name NAME] [--zk]      upload an ONNX model; returns its ModelInfo
  %ciro jobs [--limit N]                      recent jobs as a table
  %ciro status                                the gateway and its workers
  %ciro verify RESULT [--model PATH]          check a result offline (a variable or a result JSON file)
  %ciro config [key=value ...]                show or set this session's settings (e.g. gateway_url=...,
                                              verification=quorum); precedence: these > CIRO_* > file > defaults
  %ciro help

What each level proves (a valid result at that level):
""" + "\n".join(f"  {level.value}: {level.proves}." for level in VerificationLevel)


#: infer's options that take a value (the word after one is its value, not part of INPUT).
_INFER_VALUED = frozenset({"--verify", "--gpu-model", "--gpu-memory-gb", "--max-payment", "--timeout"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%ciro {self.prog.split()[-1]}: {message}. See %ciro help.")


def _parsers() -> dict[str, _Parser]:
    infer = _Parser(prog="%ciro infer", add_help=False)
    infer.add_argument("model")
    infer.add_argument("input", nargs="?")
    infer.add_argument("--verify", dest="verification")
    infer.add_argument("--gpu", action="store_true")
    infer.add_argument("--gpu-model")
    infer.add_argument("--gpu-memory-gb", type=float)
    infer.add_argument("--cpu-only", action="store_true")
    infer.add_argument("--async", dest="asynchronous", action="store_true")
    infer.add_argument("--max-payment", type=int)
    infer.add_argument("--timeout", type=float)
    deploy = _Parser(prog="%ciro deploy", add_help=False)
    deploy.add_argument("path")
    deploy.add_argument("--name")
    deploy.add_argument("--zk", action="store_true")
    jobs = _Parser(prog="%ciro jobs", add_help=False)
    jobs.add_argument("--limit", type=int, default=20)
    check = _Parser(prog="%ciro verify", add_help=False)
    check.add_argument("result")
    check.add_argument("--model")
    return {"infer": infer, "deploy": deploy, "jobs": jobs, "verify": check}


class JobHandle:
    """A job submitted with ``--async``: the cell returns at once; the status line moves by itself."""

    def __init__(self, client: CiroClient, line: StatusLine, box: Any, inputs: dict[str, np.ndarray] | None,
                 processor: Processor | None = None, raw: Any = None, model: str | None = None) -> None:
        self.job_id = line.job_id
        self._model = model
        self.status_line = line
        self.card: ResultCard | None = None
        self._client = client
        self._box = box
        self._inputs = inputs
        self._done = threading.Event()
        self._result: JobResult | None = None
        self._processor, self._raw = processor, raw

    def _finish(self, result: JobResult) -> None:
        if self._processor is not None and result.outputs is not None:
            result = dataclasses.replace(result, prediction=self._processor.postprocess(result.outputs, self._raw))
        self._result = result
        self.card = ResultCard(result, inputs=self._inputs, model=self._model)
        self._box.children = (*self._box.children, self.card.widget)
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> JobResult:
        """Wait for the job (raises UsageError if it failed) and return its result."""
        self._client.wait(self.job_id, timeout=timeout)
        if not self._done.wait(timeout=30) or self._result is None:
            raise UsageError(f"Job {self.job_id} finished but its status line did not; check %ciro jobs.")
        return _checked(self._result)

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id}, {self.status_line.state})"


def _checked(result: JobResult) -> JobResult:
    if result.error:
        raise UsageError(f"Job {result.job_id} {result.status.value}: {result.error.get('message', '')}")
    return result


@magics_class
class CiroMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.settings: dict[str, Any] = {}
        self._client: CiroClient | None = None
        self._parsers = _parsers()
        #: The last status line and result card shown (what the tests and curious users look at).
        self.last_status: StatusLine | None = None
        self.last_card: ResultCard | None = None

    # -- plumbing -------------------------------------------------------------------------
    @property
    def ciro_config(self) -> Config:
        try:
            return Config.load(**self.settings)
        except CiroError as exc:
            raise UsageError(exc.message) from None

    @property
    def client(self) -> CiroClient:
        if self._client is None:
            cfg = self.ciro_config
            try:
                self._client = CiroClient(cfg.gateway_url, config=cfg) if cfg.gateway_url else CiroClient.local(
                    progress=True, **self.settings)
            except CiroError as exc:
                raise UsageError(exc.message) from None
        return self._client

    @no_var_expand  # infer's INPUT is Python: IPython must not rewrite its {...}; _expand does the rest
    @line_cell_magic
    def ciro(self, line: str, cell: str | None = None) -> Any:
        parts = line.split(None, 1)
        if not parts:
            raise UsageError("%ciro needs a command: infer, deploy, jobs, status, verify, config or help.")
        command, rest = parts[0], parts[1] if len(parts) > 1 else ""
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(f"Unknown %ciro command {command!r}. Commands: infer, deploy, jobs, status, verify, "
                             "config, help.")
        args = self._infer_args(rest) if command == "infer" else _split(self._expand(rest))
        if cell is not None and command != "infer":
            raise UsageError(f"%%ciro works with infer only (the cell body is the input); use %ciro {command}.")
        try:
            return handler(args, cell)
        except CiroError as exc:  # every Ciro error says what to do next: show it, no traceback
            raise UsageError(exc.message) from None

    def _parse(self, command: str, args: list[str]) -> argparse.Namespace:
        return self._parsers[command].parse_args(args)

    def _expand(self, text: str) -> str:
        """IPython's usual ``$name`` / ``{expr}`` expansion from the notebook's namespace (left as is if it fails)."""
        if self.shell is None:
            return text
        try:
            return str(DollarFormatter().vformat(text, args=[], kwargs=self.shell.user_ns))
        except Exception:  # as IPython's own var_expand: a line that does not format is used untransformed
            return text

    def _infer_args(self, rest: str) -> list[str]:
        """infer's arguments for the parser: the options and MODEL (expanded and unquoted as for every command),
        then INPUT as the Python source the user wrote: every word that is neither an option nor MODEL."""
        words = python_words(rest)
        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(words):
            if words[i].startswith("--") and words[i][2:3].isalpha():
                options.append(words[i])
                if words[i] in _INFER_VALUED and i + 1 < len(words):
                    i += 1
                    options.append(words[i])
            else:
                positional.append(words[i])
            i += 1
        argv = _split(self._expand(" ".join(options)))
        if positional:
            argv += ["--", *_split(self._expand(positional[0]))]
            if len(positional) > 1:
                argv.append(" ".join(positional[1:]))
        return argv

    # -- commands -------------------------------------------------------------------------
    def _cmd_help(self, args: list[str], cell: str | None) -> None:
        print(HELP)

    def _cmd_config(self, args: list[str], cell: str | None) -> dict[str, Any]:
        changes = {}
        for arg in args:
            key, sep, value = arg.partition("=")
            if not sep or not key:
                raise UsageError(f"%ciro config takes key=value pairs, not {arg!r}.")
            changes[key.strip()] = value.strip()
        if changes:
            known = set(Config.__dataclass_fields__)
            unknown = sorted(set(changes) - known)
            if unknown:
                raise UsageError(f"Unknown setting(s) {unknown}. Settings: {', '.join(sorted(known))}.")
            trial = {**self.settings, **changes}
            try:
                Config.load(**trial)
            except CiroError as exc:
                raise UsageError(exc.message) from None
            self.settings = trial
            self._client = None  # the next command connects with the new settings
        cfg = self.ciro_config
        shown = {k: getattr(cfg, k) for k in ("gateway_url", "home", "verification", "request_timeout_s")}
        shown.update(self.settings)
        print("\n".join(f"{k} = {v}" for k, v in shown.items()))
        return shown

    def _cmd_status(self, args: list[str], cell: str | None) -> dict[str, Any]:
        health = self.client.health()
        workers = self.client.workers()
        print(f"gateway {self.client.url}: {health.get('status')}, {health.get('workers_alive')} workers alive, "
              f"queue {health.get('queue_depth')}")
        for wk in workers:
            print(f"  {wk['id']}: {'alive' if wk.get('alive') else 'dead'}, {wk.get('inflight_batches', 0)} batches, "
                  f"provider {wk.get('provider') or '-'}, {', '.join(wk.get('execution_providers') or [])}")
        return {"health": health, "workers": workers}

    def _cmd_deploy(self, args: list[str], cell: str | None) -> ModelInfo:
        a = self._parse("deploy", args)
        if not Path(a.path).expanduser().is_file():
            raise UsageError(f"No model file at {a.path}. Give the path of an ONNX file.")
        info = self.client.deploy(Path(a.path).expanduser(), name=a.name, zk=a.zk)
        print(f"deployed {info.name or info.hash[:12]}: {info.hash}"
              + (f" (zk {info.zk.get('status')})" if info.zk else ""))
        return info

    def _cmd_jobs(self, args: list[str], cell: str | None) -> list[JobResult]:
        a = self._parse("jobs", args)
        jobs = self.client.jobs(limit=a.limit)
        display(JobsTable(jobs))
        return jobs

    def _cmd_verify(self, args: list[str], cell: str | None) -> VerificationReport:
        a = self._parse("verify", args)
        target = self._value(a.result) if a.result.isidentifier() else a.result
        if isinstance(target, JobHandle):
            target = target.result()
        if not isinstance(target, JobResult | dict) and not Path(str(target)).is_file():
            raise UsageError(f"{a.result!r} is neither a result (JobResult, dict) nor a result JSON file.")
        report = verify(target, model=a.model)
        print(report.text())
        return report

    def _cmd_infer(self, args: list[str], cell: str | None) -> JobResult | JobHandle:
        a = self._parse("infer", args)
        if cell is None and a.input is None:
            raise UsageError("%ciro infer MODEL INPUT: name the input (a variable, a Python expression or a file), "
                             "or use %%ciro infer MODEL with the input in the cell body.")
        if cell is not None and a.input is not None:
            raise UsageError("%%ciro infer takes its input from the cell body; drop the INPUT argument.")
        ns = self.shell.user_ns if self.shell is not None else {}
        data = cell_input(cell, ns) if cell is not None else line_input(a.input, ns)
        info = resolve_model(self.client, a.model)
        proc = self.client.processor(info.hash) if is_raw(data) else None
        if is_raw(data) and proc is None:
            raise UsageError(f"Model {info.name or info.hash[:12]} takes tensors: text and image input needs a model "
                             "with a processor bundle (e.g. one deployed with the Hugging Face plugin). Pass an "
                             "array, list or DataFrame.")
        raw, data = data, proc.preprocess(data) if proc is not None else data
        level = VerificationLevel.parse(a.verification or self.ciro_config.verification).value
        options: dict[str, Any] = {"gpu": True} if a.gpu else {}
        if a.gpu_model:
            options["gpu_model"] = a.gpu_model
        if a.gpu_memory_gb is not None:
            options["gpu_memory_gb"] = a.gpu_memory_gb
        if a.cpu_only:
            options["cpu_only"] = True
        if a.max_payment is not None:
            options["max_payment"] = a.max_payment
        job_id = self.client.submit(info.hash, data, verification=level, **options)
        line = StatusLine(job_id, verification=level, paid=a.max_payment is not None)
        self.last_status = line
        box = JobBox(line)
        named = _named(info, data)
        if a.asynchronous:
            handle = JobHandle(self.client, line, box, named, proc, raw, model=_model_file(a.model))
            display(box)
            watch(self.client, line, on_final=lambda r: self._card_done(handle, r))
            return handle
        display(box)
        watcher = watch(self.client, line)
        result = self.client.wait(job_id, timeout=a.timeout)
        if proc is not None and result.outputs is not None:
            result = dataclasses.replace(result, prediction=proc.postprocess(result.outputs, raw))
        watcher.join(timeout=5)
        card = ResultCard(result, inputs=named, model=_model_file(a.model))
        self.last_card = card
        box.children = (*box.children, card.widget)
        if result.error:
            raise UsageError(f"Job {job_id} {result.status.value}: {result.error.get('message', '')}")
        print(card.text())  # the text form, for frontends without widgets (nbconvert, terminal IPython)
        return result

    def _card_done(self, handle: JobHandle, result: JobResult) -> None:
        handle._finish(result)
        self.last_card = handle.card

    # -- inputs ---------------------------------------------------------------------------
    def _value(self, name: str) -> Any:
        ns = self.shell.user_ns if self.shell is not None else {}
        if name not in ns:
            raise UsageError(f"No variable {name!r} in the notebook. Define it first, or give a file path.")
        return ns[name]



def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"%ciro: cannot parse the arguments ({exc}). See %ciro help.") from None


def _named(info: ModelInfo, data: Any) -> dict[str, np.ndarray] | None:
    """The inputs by name, for the Verify button's input check (None when they cannot be named simply)."""
    if isinstance(data, dict):
        return {k: np.asarray(v) for k, v in data.items()}
    if len(info.inputs) == 1:  # cast as the SDK does: DataFrames and lists to the model's dtype, arrays as they are
        spec = info.inputs[0]
        if isinstance(data, np.ndarray):
            return {spec.name: data}
        arr = data.to_numpy() if hasattr(data, "to_numpy") else data
        return {spec.name: np.asarray(arr).astype(spec.dtype)}
    return None


def _model_file(ref: str) -> str | None:
    """The model argument when it names a file here (what the card's offline check binds to), else None."""
    try:
        return ref if Path(ref).expanduser().is_file() else None
    except (OSError, RuntimeError):
        return None
