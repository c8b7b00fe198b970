"""What a wikilink in a note names: a note (`[[Pairs/sentiment]]`) or a data file (`[[Data/imdb.csv]]`).

Obsidian resolves a link with a folder as a vault path, and a bare name as the one file of that
name anywhere in the vault. The same resolution serves pairs notes and the data files a spec's
`prompts:` may name, so both refuse the same things: a path out of the vault (`..`, a symlink),
Obsidian's config folder and hidden files, sync tools' conflict copies, names no file system
can hold (a NUL, over 255 bytes), and anything that is not a regular file (a FIFO would block the
reader, a device never ends).
"""

from __future__ import annotations

import glob
import os
import re
import stat
from pathlib import Path

from actadd_notes.errors import VaultError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.paths import resolve_in_vault
from actadd_notes.vault.scan import NoteFilter

__all__ = ["DATA_SUFFIXES", "WIKILINK", "is_wikilink", "resolve_data_file", "resolve_link"]

# `[[target]]`, `[[target#heading]]`, `[[target|alias]]`: group 1 is the target.
WIKILINK = re.compile(r"^\[\[([^\[\]|#^]+)(?:#[^\[\]|]*)?(?:\|[^\[\]]*)?\]\]$")
# The data files a spec's `prompts:` can read (the loader, experiments/prompt_sets.py, reads each).
DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet", ".txt")
# The common limit of one file or folder name, in bytes.
_MAX_NAME_BYTES = 255


def is_wikilink(value: object) -> bool:
    return isinstance(value, str) and WIKILINK.match(value.strip()) is not None


def resolve_data_file(config: VaultConfig, link: str) -> Path:
    """The data file `link` (`[[Data/x.csv]]`, `[[x.csv|alias]]`) names: a regular file inside the
    vault with one of `DATA_SUFFIXES`. VaultError when it is missing, ambiguous, outside the vault
    or hidden, not a regular file, or of another kind."""
    target = _target(link, "[[Data/prompts.csv]]")
    if Path(target).suffix.lower() not in DATA_SUFFIXES:
        raise VaultError(
            f"{link}: {Path(target).name!r} is not a data file — link a {', '.join(DATA_SUFFIXES)} file "
            '(with its extension, e.g. "[[Data/prompts.csv]]")',
            path=target,
        )
    return resolve_link(config, link)


def resolve_link(config: VaultConfig, link: str, *, note: bool = False) -> Path:
    """Obsidian's resolution of `[[target]]`: a vault path when the target has a folder, else the
    one file of that name anywhere in the vault (hidden files, the config folder and sync copies
    never count). `note`: the target is a note, whose `.md` a link leaves out. The file must be a
    regular file: it is checked with stat before anyone opens it."""
    what = "note" if note else "file"
    target = _target(link, "[[Pairs/sentiment]]" if note else "[[Data/prompts.csv]]")
    if note:
        target = target.removesuffix(".md") + ".md"
    if "/" in target:
        path = resolve_in_vault(config.root, target, config_folder=config.config_folder)
        if not os.path.lexists(path):
            raise VaultError(f"{link}: no {what} {target} in the vault", path=target)
    else:
        path = _by_name(config, link, target, what)
    _check_regular(link, path, what)
    return path


def _target(link: str, example: str) -> str:
    """The target of `link`, checked for what a file system cannot hold (a NUL, an over-long name)."""
    found = WIKILINK.match(link.strip()) if isinstance(link, str) else None
    if found is None:
        raise VaultError(f"{link!r} is not a wikilink like {example}", path=str(link))
    target = found.group(1).strip()
    if "\x00" in target:
        raise VaultError(f"{link!r}: a link cannot hold a NUL character", path=target)
    for part in target.split("/"):
        if len(part.encode("utf-8", errors="surrogatepass")) > _MAX_NAME_BYTES:
            raise VaultError(
                f"[[{target[:60]}…]]: the name {part[:40]!r}… is over {_MAX_NAME_BYTES} bytes, longer than a file "
                "name can be",
                path=target[:60],
            )
    if target in (".", ".."):
        raise VaultError(f"{link}: {target!r} names a folder, not a file", path=target)
    return target


def _by_name(config: VaultConfig, link: str, name: str, what: str) -> Path:
    keep = NoteFilter(root=config.root, suffixes=())  # app, sync and editor noise
    matches = [
        path
        for path in sorted(config.root.rglob(glob.escape(name)))
        if keep(None, path)
        and not _hidden(path.relative_to(config.root), config.config_folder)
        and not path.is_dir()  # what else is not a regular file gets its own error below
    ]
    if not matches:
        raise VaultError(f"{link}: no {what} named {name} in the vault", path=name)
    if len(matches) > 1:
        names = ", ".join(p.relative_to(config.root).as_posix() for p in matches)
        raise VaultError(f"{link}: several {what}s are named {name} ({names}) — link with its folder", path=name)
    return resolve_in_vault(config.root, matches[0].relative_to(config.root), config_folder=config.config_folder)


def _hidden(relative: Path, config_folder: str) -> bool:
    """Whether Obsidian hides `relative` (a dot name on the way) or owns it (its config folder)."""
    first = relative.parts[0].casefold()
    return first in (config_folder.casefold(), ".obsidian") or any(part.startswith(".") for part in relative.parts)


def _check_regular(link: str, path: Path, what: str) -> None:
    try:
        info = os.stat(path)
    except OSError as error:
        raise VaultError(f"{link}: cannot read {path.name}: {error.strerror or error}", path=path) from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
        raise VaultError(f"{link}: {path.name} is {kind} — link a {what}", path=path)
