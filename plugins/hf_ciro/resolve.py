"""A Hugging Face model reference -> the folder that holds it, pinned to a content id.

Two sources: a local folder (what ``save_pretrained`` wrote), pinned by a hash of its files, or a Hub repo id,
pinned by its commit sha: downloaded into huggingface_hub's cache (only the files the exporter reads) when the Hub is
reachable, read from that cache as it is with ``HF_HUB_OFFLINE=1`` or when the Hub cannot be reached
(:mod:`hf_ciro.hub`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ciro import InputError

from .hub import Preview

__all__ = ["Preview", "Resolved", "describe", "folder_sha", "hub_cache_dir", "resolve"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resolved:
    repo_id: str  # "org/name", or for a local folder its folder name
    revision: str | None  # what was asked for
    sha: str  # commit sha (Hub repo) or "local-<first 40 hex of a sha256 over the folder's files>"
    path: Path  # the snapshot in the Hugging Face cache / the folder, holding config.json
    source: str  # "cache" (a Hub repo, downloaded into or found in the Hugging Face cache) or "folder"

    @property
    def key(self) -> str:
        """Which model this is, across its revisions: the repo id, or ``folder:`` and the folder's absolute path
        (a folder's name says little: every packaged model may live in a folder called ``model``)."""
        return self.repo_id if self.source == "cache" else f"folder:{self.path}"


def resolve(repo_id_or_path: str, revision: str | None = None, *, folders: bool = True, download: bool = True,
            token: str | None = None) -> Resolved:
    """Find a model: an existing folder with a config.json, else a Hub repo id, downloaded into the Hugging Face
    cache unless ``download=False`` or HF_HUB_OFFLINE=1 (then only the cache is read). ``token`` reads gated or
    private repos (default: HF_TOKEN or the ``huggingface-cli login`` token). ``folders=False`` takes repo ids only
    (a web page must not probe the gateway's own file system)."""
    folder = _folder(repo_id_or_path, folders)
    if folder is not None:
        return _from_folder(folder, revision)
    return _from_hub(repo_id_or_path, revision, download, token)


def describe(repo_id_or_path: str, revision: str | None = None, *, folders: bool = True,
             token: str | None = None) -> Preview:
    """What the Deploy page shows of a model (revision, task, config, size) without downloading its weights: a
    Hub repo as the Hub lists it now (its small files are cached), or as cached when offline; a folder as it is."""
    from .export import infer_task
    from .hub import preview

    folder = _folder(repo_id_or_path, folders)
    if folder is None:
        return preview(repo_id_or_path, revision, cache=hub_cache_dir(), token=token)
    found = _from_folder(folder, revision)
    config = json.loads((found.path / "config.json").read_text())
    size = sum(p.stat().st_size for p in found.path.rglob("*") if p.is_file())
    return Preview(found.repo_id, found.sha, "folder", infer_task(found.path), config if isinstance(config, dict)
                   else {}, size)


def _folder(spec: str, folders: bool) -> Path | None:
    """The folder ``spec`` names (when folders are allowed), or None for a Hub repo id; InputError for neither."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"Expected a model folder or a Hugging Face repo id, got {spec!r}. Pass a folder "
                         "that holds config.json or a repo id such as 'sentence-transformers/all-MiniLM-L6-v2'.")
    if not folders:
        if not _is_repo_id(spec):
            raise InputError(f"{spec!r} is not a Hugging Face repo id ('org/name' or 'name'). This page "
                             "deploys Hub models; deploy a local folder with `ciro hf deploy FOLDER` on the gateway.")
        return None
    try:
        folder = Path(spec).expanduser()
        is_dir, is_file = folder.is_dir(), folder.is_file()
    except (RuntimeError, OSError, ValueError):  # '~nobody/x', a name too long, a NUL byte: not a folder
        is_dir = is_file = False
    # A folder wins over a repo id of the same spelling, as in transformers' own from_pretrained.
    if is_dir:
        return folder
    if is_file:
        raise InputError(f"{spec!r} is a file. Pass the folder that holds the model's config.json, or a "
                         "Hugging Face repo id.")
    if not _is_repo_id(spec):
        raise InputError(f"{spec!r} is neither an existing folder nor a Hugging Face repo id ('org/name' "
                         "or 'name'). Pass the folder that holds the model's config.json, or a repo id such as "
                         "'sentence-transformers/all-MiniLM-L6-v2'.")
    return None


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


def _from_hub(repo_id: str, revision: str | None, download: bool, token: str | None) -> Resolved:
    from .hub import snapshot

    path = snapshot(repo_id, revision, cache=hub_cache_dir(), token=token, download=download)
    return Resolved(repo_id=repo_id, revision=revision, sha=path.name, path=path, source="cache")
