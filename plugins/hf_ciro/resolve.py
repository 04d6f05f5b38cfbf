"""A Hugging Face model reference -> the folder that holds it, pinned to a content id.

Two sources: a local folder (what ``save_pretrained`` wrote), pinned by a hash of its files, or a repo id found in
the local Hugging Face cache, pinned by the snapshot's commit sha. Ciro never downloads: the machines that run it
do not reach the Hub, so the cache is always read with ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ciro import InputError, ModelNotFoundError

__all__ = ["Resolved", "folder_sha", "hub_cache_dir", "resolve"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resolved:
    repo_id: str  # "org/name", or for a local folder its folder name
    revision: str | None  # what was asked for
    sha: str  # commit sha (cache) or "local-<first 40 hex of a sha256 over the folder's files>"
    path: Path  # the snapshot / folder holding config.json
    source: str  # "cache" or "folder"

    @property
    def key(self) -> str:
        """Which model this is, across its revisions: the repo id, or ``folder:`` and the folder's absolute path
        (a folder's name says little: every packaged model may live in a folder called ``model``)."""
        return self.repo_id if self.source == "cache" else f"folder:{self.path}"


def resolve(repo_id_or_path: str, revision: str | None = None, *, folders: bool = True) -> Resolved:
    """Find a model: an existing folder with a config.json, else a repo id in the local Hugging Face cache.
    ``folders=False`` takes repo ids only (a web page must not probe the gateway's own file system)."""
    if not isinstance(repo_id_or_path, str) or not repo_id_or_path.strip():
        raise InputError(f"Expected a model folder or a Hugging Face repo id, got {repo_id_or_path!r}. Pass a folder "
                         "that holds config.json or a repo id such as 'sentence-transformers/all-MiniLM-L6-v2'.")
    if not folders:
        if not _is_repo_id(repo_id_or_path):
            raise InputError(f"{repo_id_or_path!r} is not a Hugging Face repo id ('org/name' or 'name'). This page "
                             "deploys Hub models; deploy a local folder with `ciro hf deploy FOLDER` on the gateway.")
        return _from_cache(repo_id_or_path, revision)
    try:
        folder = Path(repo_id_or_path).expanduser()
        is_dir, is_file = folder.is_dir(), folder.is_file()
    except (RuntimeError, OSError, ValueError):  # '~nobody/x', a name too long, a NUL byte: not a folder
        is_dir = is_file = False
    # A folder wins over a repo id of the same spelling, as in transformers' own from_pretrained.
    if is_dir:
        return _from_folder(folder, revision)
    if is_file:
        raise InputError(f"{repo_id_or_path!r} is a file. Pass the folder that holds the model's config.json, or a "
                         "Hugging Face repo id.")
    if not _is_repo_id(repo_id_or_path):
        raise InputError(f"{repo_id_or_path!r} is neither an existing folder nor a Hugging Face repo id ('org/name' "
                         "or 'name'). Pass the folder that holds the model's config.json, or a repo id such as "
                         "'sentence-transformers/all-MiniLM-L6-v2'.")
    return _from_cache(repo_id_or_path, revision)


def folder_sha(folder: Path) -> str:
    """``local-`` + the first 40 hex digits of a sha256 over every file's relative path and bytes.

    Dotfiles and dot-folders (.git, .cache, editor droppings) are skipped: they do not change the model.
    """
    digest = hashlib.sha256()
    files = sorted(
        (path.relative_to(folder).as_posix(), path)
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    for rel, path in files:
        # Length prefixes keep (name, bytes) pairs unambiguous: "a"+"bc" never hashes like "ab"+"c".
        name = rel.encode()
        digest.update(len(name).to_bytes(8, "big") + name + path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return "local-" + digest.hexdigest()[:40]


def hub_cache_dir() -> Path:
    """The Hub cache folder, read from the environment now (huggingface_hub reads it once, at import).

    Same precedence as huggingface_hub: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub,
    XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
    """
    xdg = os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    home = os.getenv("HF_HOME", os.path.join(xdg, "huggingface"))
    default = os.path.join(os.path.expandvars(os.path.expanduser(home)), "hub")
    cache = os.getenv("HF_HUB_CACHE", os.getenv("HUGGINGFACE_HUB_CACHE", default))
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _from_folder(folder: Path, revision: str | None) -> Resolved:
    folder = folder.resolve()
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} has no config.json, so it is not a transformers model folder. Pass the folder "
                         "that save_pretrained (or `huggingface-cli download REPO --local-dir DIR`) wrote.")
    return Resolved(repo_id=folder.name, revision=revision, sha=folder_sha(folder), path=folder, source="folder")


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _from_cache(repo_id: str, revision: str | None) -> Resolved:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        raise _not_cached(repo_id, revision, cache) from exc
    if not (snapshot / "config.json").is_file():
        raise ModelNotFoundError(
            f"The cached snapshot {snapshot} of {repo_id!r} has no config.json (a partial download). On a machine with "
            f"Hub access run `huggingface-cli download {repo_id} --revision {snapshot.name}` and copy the cache here, "
            "or pass the model's local folder instead.",
            detail={"repo_id": repo_id, "revision": revision, "cache": str(cache)},
        )
    return Resolved(repo_id=repo_id, revision=revision, sha=snapshot.name, path=snapshot, source="cache")


def _not_cached(repo_id: str, revision: str | None, cache: Path) -> ModelNotFoundError:
    detail = {"repo_id": repo_id, "revision": revision, "cache": str(cache)}
    offline = ("Ciro reads only the local Hugging Face cache (as with HF_HUB_OFFLINE=1): it never downloads from the "
               "Hub.")
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        return ModelNotFoundError(
            f"{repo_id!r} is not in the local Hugging Face cache ({cache}) and is not a local folder. {offline} On a "
            f"machine with Hub access run `huggingface-cli download {repo_id}` and copy the cache here (or point "
            "HF_HUB_CACHE / HF_HOME at it), or pass the model's local folder instead.",
            detail=detail,
        )
    wanted = revision or "main"
    refs = sorted(p.relative_to(repo_dir / "refs").as_posix() for p in (repo_dir / "refs").rglob("*") if p.is_file())
    snapshots = sorted(p.name for p in (repo_dir / "snapshots").glob("*") if p.is_dir())
    return ModelNotFoundError(
        f"Revision {wanted!r} of {repo_id!r} is not in the local Hugging Face cache ({cache}); cached refs: "
        f"{refs or 'none'}, cached snapshots: {snapshots or 'none'}. {offline} Pass one of the cached revisions, or "
        f"on a machine with Hub access run `huggingface-cli download {repo_id} --revision {wanted}` and copy the "
        "cache here, or pass the model's local folder instead.",
        detail={**detail, "cached_refs": refs, "cached_snapshots": snapshots},
    )
