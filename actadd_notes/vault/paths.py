"""Where the tool may write: inside the vault, never outside it, never where Obsidian hides files.

Every path the tool writes to comes from a note, a config file or a template, so it is
checked here first: `resolve_in_vault` for vault-relative paths (what notes and
`actadd-notes.yaml` hold), `ensure_in_vault` for paths that are already absolute.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from actadd_notes.errors import VaultError

__all__ = ["check_note_name", "ensure_in_vault", "resolve_in_vault", "safe_filename"]

# Characters that break a wikilink (# | ^ [ ] :) or a file system on some OS (the rest), and
# control characters; `%` starts an Obsidian comment.
_UNSAFE = re.compile(r'[#|^:\[\]%\\/?*<>"\x00-\x1f\x7f]+')
# What a wikilink or a journal line cannot carry in a note's path.
_UNLINKABLE = re.compile(r"[\[\]#^|\x00-\x1f\x7f\x85\u2028\u2029]|%%")
# Windows refuses these names whatever the extension; vaults are synced across OSes.
_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$")
# Leaves room under the common 255-byte name limit for Obsidian's " 12" and ".md".
_MAX_NAME_BYTES = 200


def resolve_in_vault(vault: Path, relative: str | Path, *, config_folder: str = ".obsidian") -> Path:
    """The absolute path of `relative` inside `vault`, with symlinks followed.

    Refuses (VaultError) absolute paths, `..` or symlinks that lead out of the vault, anything
    inside the config folder, which Obsidian owns (`.obsidian/` too, whatever the vault's config
    folder is called), and anything else Obsidian hides: a file or folder whose name starts with
    a dot. The result keeps the vault's
    spelling of the root (no symlink resolution there) so callers can `relative_to` it.
    """
    if "\x00" in str(relative):
        raise VaultError(f"{relative!r}: a path cannot hold a NUL character", path=relative)
    relative_path = Path(relative)
    if relative_path.is_absolute() or relative_path.drive:
        raise VaultError(f"{relative}: absolute paths are refused, give one relative to the vault", path=relative)
    root = Path(os.path.abspath(vault))
    try:
        real_root = root.resolve()
        inner = (real_root / relative_path).resolve().relative_to(real_root)
    except ValueError:
        raise VaultError(f"{relative}: leads outside the vault {root}", path=relative) from None
    except (OSError, RuntimeError) as error:  # a symlink loop (RuntimeError before 3.13)
        raise VaultError(f"{relative}: cannot resolve: {error}", path=relative) from None
    if inner.parts and inner.parts[0].casefold() in (config_folder.casefold(), ".obsidian"):
        raise VaultError(
            f"{relative}: refusing to read or write inside {inner.parts[0]}/, Obsidian's config folder", path=relative
        )
    hidden = next((part for part in inner.parts if part.startswith(".")), None)
    if hidden is not None:
        raise VaultError(
            f"{relative}: refusing a path through {hidden}, which Obsidian hides (a name starting with a dot)",
            path=relative,
        )
    return root / inner


def ensure_in_vault(vault: Path, path: str | Path, *, config_folder: str = ".obsidian") -> Path:
    """Like `resolve_in_vault`, but also takes an absolute path, which must lie in the vault."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return resolve_in_vault(vault, candidate, config_folder=config_folder)
    root = Path(os.path.abspath(vault))
    for base in (root, root.resolve()):
        try:
            relative = candidate.relative_to(base)
        except ValueError:
            continue
        return resolve_in_vault(root, relative, config_folder=config_folder)
    raise VaultError(f"{path}: outside the vault {root}", path=path)


def safe_filename(name: str) -> str:
    """A file name (no folders) that Obsidian can link to and every OS can store; never empty.

    Unsafe characters become spaces, whitespace collapses, and leading or trailing dots
    and spaces go (a leading dot hides the file from Obsidian; Windows drops trailing ones).
    """
    cleaned = " ".join(_UNSAFE.sub(" ", unicodedata.normalize("NFC", name)).split()).strip(". ")
    encoded = cleaned.encode()
    if len(encoded) > _MAX_NAME_BYTES:
        cleaned = encoded[:_MAX_NAME_BYTES].decode(errors="ignore").rstrip(". ")
    if _RESERVED.match(cleaned):
        cleaned = f"_{cleaned}"
    return cleaned or "Untitled"


def check_note_name(vault: Path, path: Path) -> str:
    """The link target (vault-relative, no `.md`) of the note at `path`, checked before any work
    is done for it: VaultError naming the note when its name or a folder's holds what a wikilink
    or a journal line breaks on (`[ ] # ^ |`, `%%`, a line break or another control character),
    since its result note, journal line and literature links would then fail or mislink."""
    root = Path(os.path.abspath(vault))
    try:
        relative = Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        raise VaultError(f"{path}: outside the vault {root}", path=path) from None
    found = _UNLINKABLE.search(relative)
    if found is not None:
        raise VaultError(
            f"{relative}: the note's path holds {found.group()!r}, which Obsidian links (and the lab journal) break "
            "on, so its results could not link back to it; rename it without [ ] # ^ | %% or line breaks",
            path=path,
        )
    return relative.removesuffix(".md")
