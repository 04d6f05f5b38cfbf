"""What ``%ciro`` shows: a live status line per job, a result card with a Verify button, a jobs table.

Each view is an ipywidgets widget (live in JupyterLab and Notebook) and also has a plain-text form: its
``_repr_mimebundle_`` carries ``text/plain`` next to the widget view, so nbconvert, terminal IPython and any
frontend without widget support show the text. Widgets are updated from a background thread; nothing here
blocks the kernel.
"""

from __future__ import annotations

import abc
import html
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import ipywidgets as w
import numpy as np

from ciro import CiroClient, JobResult, JobStatus, VerificationLevel, VerificationReport, verify

__all__ = ["JobBox", "JobsTable", "ResultCard", "StatusLine", "watch"]

#: The steps a job goes through, in order (``proving`` only for zk, ``settled`` only for paid jobs).
STEPS = ("queued", "running", "proving", "done", "settled")
_FINAL = {"done", "settled", "failed", "cancelled"}


class _View(abc.ABC):
    """A widget with a plain-text form."""

    widget: w.Widget

    @abc.abstractmethod
    def text(self) -> str:
        """The view as plain text (what frontends without widget support show)."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = self.text()
        return bundle

    def __repr__(self) -> str:
        return self.text()


class StatusLine(_View):
    """queued -> running -> proving -> done -> settled, for one job; ``state`` is the latest."""

    def __init__(self, job_id: str, *, verification: str, paid: bool) -> None:
        self.job_id = job_id
        self.verification = verification
        self.paid = paid
        self.state = "queued"
        self.detail = ""
        self.widget = w.HTML()
        self._render()

    def steps(self) -> list[str]:
        zk = self.verification == VerificationLevel.ZKML
        return [s for s in STEPS if (s != "proving" or zk) and (s != "settled" or self.paid)]

    def set(self, state: str, detail: str = "") -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self._render()

    def _render(self) -> None:
        steps = self.steps()
        reached = steps.index(self.state) if self.state in steps else 0  # failed/cancelled: nothing reached
        parts = []
        for i, step in enumerate(steps):
            style = "font-weight:bold" if step == self.state else ("color:#2a7" if i < reached else "color:#999")
            parts.append(f'<span style="{style}">{step}</span>')
        line = " &rarr; ".join(parts)
        if self.state in ("failed", "cancelled"):
            line += f' &rarr; <span style="color:#c33;font-weight:bold">{self.state}</span>'
        detail = f' <span style="color:#666">{html.escape(self.detail)}</span>' if self.detail else ""
        self.widget.value = (f'<div role="status" aria-live="polite">ciro job <code>{self.job_id}</code>: '
                             f"{line}{detail}</div>")

    def text(self) -> str:
        return f"ciro job {self.job_id}: {self.state}" + (f" ({self.detail})" if self.detail else "")


def _preview(result: JobResult, limit: int = 6) -> str:
    parts = []
    for name, arr in (result.outputs or {}).items():
        flat = np.asarray(arr).reshape(-1)
        vals = ", ".join(f"{v:.4g}" if isinstance(v, float | np.floating) else str(v) for v in flat[:limit].tolist())
        parts.append(f"{name} {list(np.shape(arr))}: [{vals}{', ...' if flat.size > limit else ''}]")
    return "; ".join(parts) or "(no outputs)"


class JobBox(_View):
    """A job's status line and, once it is done, its result card, shown together."""

    def __init__(self, line: StatusLine) -> None:
        self.line = line
        self.widget = w.VBox([line.widget])

    @property
    def children(self) -> tuple[Any, ...]:
        return tuple(self.widget.children)

    @children.setter
    def children(self, value: tuple[Any, ...]) -> None:
        self.widget.children = value

    def text(self) -> str:
        return self.line.text()


class ResultCard(_View):
    """A finished job: output preview, level and what it proves, receipt/proof, settlement; a Verify button that
    runs the offline check (``ciro.verify``) in a background thread."""

    def __init__(self, result: JobResult, *, inputs: dict[str, np.ndarray] | None = None,
                 model: str | None = None) -> None:
        self.result = result
        self.inputs = inputs
        #: The model file the job ran, when the user named one: the check binds to it (a zk proof needs it).
        self.model = model
        self.report: VerificationReport | None = None
        self.verifying: Future[VerificationReport] | None = None
        self.verify_button = w.Button(description="Verify", tooltip="Check the evidence offline (ciro.verify)",
                                      icon="check")
        self.verify_button.on_click(lambda _: self.verify())
        self.report_html = w.HTML()
        self.widget = w.VBox([w.HTML(self._summary_html()), w.HBox([self.verify_button]), self.report_html])

    def _rows(self) -> list[tuple[str, str]]:
        r = self.result
        level = r.verification
        rows = [("job", r.job_id), ("status", r.status.value)]
        if r.prediction is not None:
            rows.append(("prediction", str(r.prediction)[:300]))
        rows += [("outputs", _preview(r)),
                ("verification", f"{level.value}: proves {level.proves}")]
        if r.receipt is not None:
            rows.append(("receipt", f"signed by worker key {r.receipt.worker_key[:18]}..."))
        if r.quorum:
            agree = sum(1 for v in r.quorum.get("votes", []) if v.get("agrees"))
            rows.append(("quorum", f"{agree} of {len(r.quorum.get('votes', []))} votes agree"))
        if r.proof_hash:
            rows.append(("proof", f"hash {r.proof_hash[:18]}..."))
        if r.settlement:
            tx = f", tx {r.settlement_tx}" if r.settlement_tx else ""
            rows.append(("settlement", f"{r.settlement}{tx}"))
        if r.latency_s is not None:
            rows.append(("latency", f"{r.latency_s * 1000:.1f} ms"))
        return rows

    def _summary_html(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                        f"<td>{html.escape(v)}</td></tr>" for k, v in self._rows())
        return f"<table aria-label='ciro result'>{cells}</table>"

    def verify(self) -> Future[VerificationReport]:
        """Start the offline check in a thread; the card shows the report when it is done."""
        self.verify_button.disabled = True
        self.report_html.value = "<i>verifying...</i>"
        fut: Future[VerificationReport] = Future()

        def run() -> None:
            try:
                report = verify(self.result, inputs=self.inputs, model=self.model)
            except Exception as exc:  # shown on the card: the button must never fail silently
                self.report_html.value = f"<pre>verification could not run: {html.escape(str(exc))}</pre>"
                fut.set_exception(exc)
            else:
                self.report = report
                colour = "#2a7" if report.valid else "#c33"
                self.report_html.value = f"<pre style='color:{colour}'>{html.escape(report.text())}</pre>"
                fut.set_result(report)
            finally:
                self.verify_button.disabled = False

        self.verifying = fut
        threading.Thread(target=run, name="ciro-verify", daemon=True).start()
        return fut

    def text(self) -> str:
        lines = [f"{k:<13}{v}" for k, v in self._rows()]
        if self.report is not None:
            lines.append(self.report.text())
        return "\n".join(lines)


class JobsTable(_View):
    def __init__(self, jobs: list[JobResult]) -> None:
        self.jobs = jobs
        head = "".join(f"<th>{h}</th>" for h in self._header())
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(j)) + "</tr>" for j in jobs)
        self.widget = w.HTML(f"<table aria-label='ciro jobs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                             "</table>")

    @staticmethod
    def _header() -> list[str]:
        return ["job", "status", "model", "level", "worker", "latency", "payment"]

    @staticmethod
    def _cells(j: JobResult) -> list[str]:
        lat = f"{j.latency_s * 1000:.1f} ms" if j.latency_s is not None else "-"
        pay = (j.settlement or "unpaid") + (f" tx {j.settlement_tx[:12]}..." if j.settlement_tx else "")
        return [j.job_id, j.status.value, j.model_hash[:12], j.verification.value, j.worker or "-", lat, pay]

    def text(self) -> str:
        rows = [self._header()] + [self._cells(j) for j in self.jobs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)) for r in rows)


def _state(r: JobResult) -> tuple[str, str]:
    if r.status is JobStatus.FAILED:
        return "failed", str((r.error or {}).get("message", ""))[:200]
    if r.status is JobStatus.DONE:
        if r.settlement in ("paid", "refunded"):
            return "settled", f"{r.settlement}, tx {r.settlement_tx}" if r.settlement_tx else str(r.settlement)
        return "done", f"{r.latency_s * 1000:.1f} ms" if r.latency_s is not None else ""
    return r.status.value, ""


def watch(client: CiroClient, line: StatusLine, *, interval: float = 0.2, timeout: float = 3600.0,
          on_final: Callable[[JobResult], None] | None = None) -> threading.Thread:
    """Poll the job in a daemon thread and move ``line`` along; ``on_final`` gets the last result (a paid job is
    followed until it is settled)."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        last: JobResult | None = None
        while time.monotonic() < deadline:
            try:
                last = client.status(line.job_id)
            except Exception as exc:  # a transient gateway error: shown, and polled again
                line.set(line.state, f"status unavailable: {exc}"[:200])
                time.sleep(interval * 5)
                continue
            state, detail = _state(last)
            line.set(state, detail)
            if state in ("failed", "cancelled", "settled") or (state == "done" and not line.paid):
                break
            time.sleep(interval)
        if on_final is not None and last is not None:
            on_final(last)

    thread = threading.Thread(target=run, name=f"ciro-watch-{line.job_id}", daemon=True)
    thread.start()
    return thread
