"""A Hub repo id -> a snapshot folder in huggingface_hub's cache, downloaded when the Hub can be reached.

Online, a repo is looked up (``model_info``) and only the files the exporter reads are downloaded into the cache,
in two steps: the small files first (config, tokenizer, image processor, sentence-transformers modules), then the
weights that those name (``model.safetensors`` or its shards, else ``pytorch_model.bin``, in the repo's root or in
its sentence-transformers Transformer folder). Offline (``HF_HUB_OFFLINE=1``), or when the Hub cannot be reached,
or when it refuses a revision that is already cached, the cache is used as it is, as ``snapshot_download`` does.

The environment is read on every call (huggingface_hub reads it once, at import): ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE``, ``HF_ENDPOINT``, and the cache folder (:func:`hf_ciro.resolve.hub_cache_dir`). A token
passed in wins; without one, huggingface_hub sends ``HF_TOKEN`` or the ``huggingface-cli login`` token.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ciro import AuthError, CiroError, InputError, ModelNotFoundError

from .export import _ST_TRANSFORMER, IMAGE_FILES, TOKENIZER_FILES, infer_task

__all__ = ["Preview", "endpoint", "hub_offline", "model_files", "preview", "snapshot"]

log = logging.getLogger("ciro.hf")
_DEFAULT_ENDPOINT = "https://huggingface.co"
_API_TIMEOUT_S = 10.0
#: Small files the exporter may read, in the repo's root or one folder down (sentence-transformers modules).
_METADATA = frozenset({"config.json", "modules.json", "sentence_bert_config.json",
                       "config_sentence_transformers.json", *IMAGE_FILES, *TOKENIZER_FILES})
_SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json")
_PICKLE = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin|pytorch_model\.bin\.index\.json")
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, now or when it was imported."""
    from huggingface_hub import constants

    now = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE
    return now or constants.HF_HUB_OFFLINE


def endpoint() -> str:
    """The Hub's URL: HF_ENDPOINT, else huggingface.co."""
    return os.environ.get("HF_ENDPOINT", _DEFAULT_ENDPOINT).rstrip("/")


def model_files(names: Iterable[str], folder: Path | None = None) -> tuple[list[str], list[str]]:
    """(small files, weights) of a repo's file ``names`` that the exporter needs. The weights are those of the root
    folder, else of the Transformer folder that ``folder``'s modules.json names; safetensors are preferred."""
    names = sorted(set(names))
    small = [n for n in names if n.count("/") <= 1 and n.rpartition("/")[2] in _METADATA]
    for sub in ("", *_transformer_folders(folder)):
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        here = [n[len(prefix):] for n in names if n.startswith(prefix) and "/" not in n[len(prefix):]]
        weights = [n for n in here if _SAFETENSORS.fullmatch(n)] or [n for n in here if _PICKLE.fullmatch(n)]
        if weights:
            return small, [prefix + n for n in weights]
    return small, []


def _transformer_folders(folder: Path | None) -> list[str]:
    try:
        modules = json.loads((folder / "modules.json").read_text()) if folder else []
    except (OSError, ValueError):  # absent or not JSON: no sentence-transformers layout to follow
        return []
    if not isinstance(modules, list):
        return []
    return [str(m.get("path", "")) for m in modules if isinstance(m, dict) and m.get("type") == _ST_TRANSFORMER]


def _files_on_disk(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def snapshot(repo_id: str, revision: str | None, *, cache: Path, token: str | None = None,
             download: bool = True) -> Path:
    """The snapshot folder of ``repo_id`` at ``revision`` (default: main) in ``cache``; downloaded unless
    ``download=False`` or offline. Raises ``ModelNotFoundError`` (no such repo or revision; not cached and the Hub
    out of reach), ``AuthError`` (a gated or private repo and no token that may read it), ``InputError`` (the repo
    holds no transformers model)."""
    if not download or hub_offline():
        return _cached(repo_id, revision, cache, "offline" if download else "no-download")
    info, failure = _model_info(repo_id, revision, token)
    if info is None:
        return _cached(repo_id, revision, cache, failure)
    names = [s.rfilename for s in info.siblings or []]
    small, _ = model_files(names)
    if "config.json" not in small:
        raise _not_a_model(repo_id, str(info.sha), "config.json")
    path = _download(repo_id, revision, small, cache, token)  # pins the sha: the weights come from the same commit
    _, weights = model_files(names, path)
    if not weights:
        raise _not_a_model(repo_id, path.name, "weights")
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    if missing := [w for w in weights if not (path / w).is_file()]:
        log.info("downloading %s@%s from %s: %d weight files, %.1f MB", repo_id, path.name[:12], endpoint(),
                 len(missing), sum(sizes.get(w, 0) for w in missing) / 1e6)
    return _download(repo_id, path.name, weights, cache, token)


@dataclass(frozen=True)
class Preview:
    """What the Deploy page shows of a Hub model before anything heavy is downloaded."""

    repo_id: str
    sha: str
    source: str  # "cache" (the snapshot is here) or "hub" (its weights are downloaded when it is deployed)
    task: str
    config: dict[str, Any]
    size: int  # bytes of the files a deploy reads (or holds, when cached)


def preview(repo_id: str, revision: str | None, *, cache: Path, token: str | None = None) -> Preview:
    """The model's revision, task, labels and size: from the Hub's listing and its small files (which it caches)
    when the Hub answers, else from a complete cached snapshot. No weights are downloaded."""
    info, failure = (None, "offline") if hub_offline() else _model_info(repo_id, revision, token)
    if info is None:
        path = _cached(repo_id, revision, cache, failure)
        return _preview(repo_id, path, "cache", sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
    names = [s.rfilename for s in info.siblings or []]
    small, _ = model_files(names)
    if "config.json" not in small:
        raise _not_a_model(repo_id, str(info.sha), "config.json")
    path = _download(repo_id, revision, small, cache, token)
    _, weights = model_files(names, path)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    complete = all((path / n).is_file() for n in weights) and bool(weights)
    return _preview(repo_id, path, "cache" if complete else "hub", sum(sizes.get(n, 0) for n in small + weights))


def _preview(repo_id: str, path: Path, source: str, size: int) -> Preview:
    config = json.loads((path / "config.json").read_text())
    return Preview(repo_id, path.name, source, infer_task(path), config if isinstance(config, dict) else {}, size)


def _model_info(repo_id: str, revision: str | None, token: str | None) -> tuple[Any, CiroError | str]:
    """(the Hub's listing, ""); (None, why) when the Hub cannot be reached; (None, the error) when it refused.
    A revision the Hub does not have raises at once, as in ``snapshot_download``."""
    import requests
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionNotFoundError

    api = HfApi(endpoint=endpoint(), token=token)
    try:
        info = api.model_info(repo_id, revision=revision or "main", files_metadata=True, timeout=_API_TIMEOUT_S)
    except RevisionNotFoundError as exc:
        raise _hub_error(exc, repo_id, revision) from exc
    except HfHubHTTPError as exc:
        return None, _hub_error(exc, repo_id, revision)
    except (requests.RequestException, OfflineModeIsEnabled) as exc:  # no answer, or none that is the Hub's
        return None, _unreachable(exc)
    return info, ""


def _unreachable(exc: Exception) -> str:
    """Why the Hub could not be reached, in a few words ("Connection refused", "ReadTimeout")."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _download(repo_id: str, revision: str | None, files: list[str], cache: Path, token: str | None) -> Path:
    import requests
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, endpoint=endpoint(), token=token,
                                      allow_patterns=[glob.escape(f) for f in files]))
    except LocalEntryNotFoundError as exc:  # an HfHubHTTPError too: the connection went during the download
        raise _broke_off(exc, repo_id, revision) from exc
    except HfHubHTTPError as exc:
        raise _hub_error(exc, repo_id, revision) from exc
    except (FileMetadataError, requests.RequestException) as exc:
        raise _broke_off(exc, repo_id, revision) from exc


def _broke_off(exc: Exception, repo_id: str, revision: str | None) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Downloading {repo_id!r} from the Hub ({endpoint()}) broke off: {_first_line(exc)}. Run the deploy again "
        "(finished files are kept), or set HF_HUB_OFFLINE=1 to deploy what the local cache holds.",
        detail={"repo_id": repo_id, "revision": revision, "reason": "download_failed"})


def _hub_error(exc: Exception, repo_id: str, revision: str | None) -> CiroError:
    """The Ciro error for an HTTP error of the Hub, naming the fix."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    hub = endpoint()
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    detail = {"repo_id": repo_id, "revision": revision, "endpoint": hub, "status": status}
    token_hint = "--token TOKEN (token= in Python), HF_TOKEN, or `huggingface-cli login`"
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFoundError(
            f"{repo_id!r} has no revision {revision!r} on the Hub ({hub}). Pass a branch, tag or commit sha that "
            f"exists (the repo's page {hub}/{repo_id} lists them), or leave --revision out for main.",
            detail={**detail, "reason": "revision_not_found"})
    if isinstance(exc, GatedRepoError):
        return AuthError(
            f"{repo_id!r} is a gated model: the Hub ({hub}) answered {status} because "
            f"{'no token was sent' if status == 401 else 'the token sent may not read it'}. Accept its licence on "
            f"{hub}/{repo_id} while logged in, then pass a token of that account: {token_hint}.",
            detail={**detail, "reason": "gated"})
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{repo_id!r} is not a model repo on the Hub ({hub}) and not a local folder. Check the repo id's "
            f"spelling; if the repo is private, pass a token that may read it: {token_hint}.",
            detail={**detail, "reason": "repo_not_found"})
    if status in (401, 403):
        return AuthError(
            f"The Hub ({hub}) refused to serve {repo_id!r} (HTTP {status}: {_first_line(exc)}). Pass a valid token "
            f"of an account that may read it: {token_hint}.", detail={**detail, "reason": "unauthorized"})
    return ModelNotFoundError(
        f"The Hub ({hub}) failed to serve {repo_id!r} (HTTP {status}: {_first_line(exc)}). Try again later, or set "
        "HF_HUB_OFFLINE=1 to deploy what the local cache holds.", detail={**detail, "reason": "hub_error"})


def _not_a_model(repo_id: str, sha: str, missing: str) -> InputError:
    what = ("no config.json in its root folder" if missing == "config.json" else
            "no PyTorch weights (model.safetensors or pytorch_model.bin, in its root or its sentence-transformers "
            "Transformer folder)")
    return InputError(f"{repo_id}@{sha[:12]} on the Hub has {what}, so it is not a transformers model Ciro can export. "
                      "Export it to ONNX yourself and deploy the .onnx file.",
                      detail={"repo_id": repo_id, "sha": sha, "missing": missing})


def _cached(repo_id: str, revision: str | None, cache: Path, failure: CiroError | str) -> Path:
    """The complete cached snapshot (config.json and weights), or the error saying why there is none. ``failure``:
    why the Hub was not asked ("offline", "no-download"), why it could not be reached, or its refusal."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    refused = failure if isinstance(failure, CiroError) else None
    why = str(failure) if refused is None else "refused"
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        if refused is not None:  # the Hub refused and there is no copy here: its answer says it all
            raise refused from None
        raise _not_cached(repo_id, revision, cache, why) from None
    if refused is not None:
        log.warning("the Hub refused %s (%s): using the cached snapshot %s", repo_id, refused.message, path.name)
    elif why not in ("offline", "no-download"):
        log.warning("the Hub (%s) cannot be reached (%s): using the cached snapshot %s of %s", endpoint(), why,
                    path.name, repo_id)
    lacks = ("config.json" if not (path / "config.json").is_file() else
             "the weights" if not model_files(_files_on_disk(path), path)[1] else None)
    if lacks:
        raise ModelNotFoundError(
            f"The cached snapshot {path} of {repo_id!r} lacks {lacks} (a partial download). {_reason(why)} Deploy "
            "it with the Hub reachable and HF_HUB_OFFLINE unset to complete it, or run `huggingface-cli download "
            f"{repo_id} --revision {path.name}` on a machine with Hub access and copy the cache here, or pass the "
            "model's local folder instead.",
            detail={"repo_id": repo_id, "revision": revision, "cache": str(cache), "reason": why})
    return path


def _reason(why: str) -> str:
    """Why only the cache was read: "offline", "no-download", "refused", or why the Hub could not be reached."""
    if why == "offline":
        return "HF_HUB_OFFLINE=1 is set, so Ciro reads only the local Hugging Face cache (it downloads from the Hub " \
               "otherwise)."
    if why == "no-download":
        return "This page reads only the gateway's Hugging Face cache; deploying the model downloads it."
    if why == "refused":
        return "The Hub refused the download."
    return (f"The Hub ({endpoint()}) could not be reached ({why}), so Ciro read only the local Hugging Face cache "
            "(it downloads from the Hub when it is reachable, unless HF_HUB_OFFLINE=1).")


def _not_cached(repo_id: str, revision: str | None, cache: Path, why: str) -> ModelNotFoundError:
    detail = {"repo_id": repo_id, "revision": revision, "cache": str(cache),
              "reason": why if why in ("offline", "no-download") else "unreachable"}
    fix = ("unset HF_HUB_OFFLINE to download it" if why == "offline" else
           "deploy it (that downloads it)" if why == "no-download" else "retry once the Hub is reachable")
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        return ModelNotFoundError(
            f"{repo_id!r} is not in the local Hugging Face cache ({cache}) and is not a local folder. {_reason(why)} "
            f"To get it: {fix}; or on a machine with Hub access run `huggingface-cli download {repo_id}` and copy "
            "the cache here (or point HF_HUB_CACHE / HF_HOME at it); or pass the model's local folder instead.",
            detail=detail,
        )
    wanted = revision or "main"
    refs = sorted(p.relative_to(repo_dir / "refs").as_posix() for p in (repo_dir / "refs").rglob("*") if p.is_file())
    snapshots = sorted(p.name for p in (repo_dir / "snapshots").glob("*") if p.is_dir())
    return ModelNotFoundError(
        f"Revision {wanted!r} of {repo_id!r} is not in the local Hugging Face cache ({cache}); cached refs: "
        f"{refs or 'none'}, cached snapshots: {snapshots or 'none'}. {_reason(why)} Pass one of the cached "
        f"revisions; or {fix}; or on a machine with Hub access run `huggingface-cli download {repo_id} --revision "
        f"{wanted}` and copy the cache here; or pass the model's local folder instead.",
        detail={**detail, "cached_refs": refs, "cached_snapshots": snapshots},
    )


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
