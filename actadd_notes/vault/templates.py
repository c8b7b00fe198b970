"""Jinja templates for the notes the tool writes, overridable per vault.

A vault's override folder (`templates_folder`, default `Templates/actadd-notes/`) is
searched first, the shipped `templates/` second, so a user overrides one template by
copying it there. User templates are data, not code: rendering always runs in Jinja's
immutable sandbox, so a template can neither reach Python internals nor change the
values it is given, and every failure is a TemplateError naming the file and line.
"""

from __future__ import annotations

import numbers
import os
import re
import unicodedata
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from actadd_notes._resources import shipped_dir
from actadd_notes.errors import TemplateError

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig

__all__ = ["TemplateRenderer", "fmt", "md_cell", "wikilink", "yaml_str"]

_LINK_BREAKERS = re.compile(r"[\[\]|]")


class TemplateRenderer:
    """Renders `name` from the override folder if it has it, else from the shipped templates."""

    def __init__(self, override_dir: Path | None = None):
        self.search_path = [*([Path(override_dir)] if override_dir is not None else []), shipped_dir("templates")]
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(self.search_path),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # Markdown, not HTML
        )
        self._env.filters.update(wikilink=wikilink, yaml_str=yaml_str, fmt=fmt, md_cell=md_cell)

    @classmethod
    def for_vault(cls, config: VaultConfig) -> TemplateRenderer:
        return cls(config.path(config.templates_folder))

    def render(self, name: str, /, **context: Any) -> str:
        try:
            template = self._env.get_template(name)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{error.filename or name}:{error.lineno}: {error.message}") from None
        except jinja2.TemplateNotFound:
            folders = ", ".join(str(folder) for folder in self.search_path)
            raise TemplateError(f"{name}: no such template in {folders}") from None
        try:
            return template.render(**context)
        except Exception as error:  # anything a template does wrong: undefined, sandbox, a filter's ValueError…
            filename, line = self._where(error) or (template.filename or name, None)
            at = f":{line}" if line else ""
            raise TemplateError(f"{filename}{at}: {type(error).__name__}: {error}") from None

    def _where(self, error: BaseException) -> tuple[str, int] | None:
        """The innermost template file and line in the traceback (Jinja rewrites template
        frames to point at the template source)."""
        folders = [os.path.abspath(folder) for folder in self.search_path]
        found = None
        traceback = error.__traceback__
        while traceback is not None:
            filename = traceback.tb_frame.f_code.co_filename
            if any(os.path.abspath(filename).startswith(folder + os.sep) for folder in folders):
                found = (filename, traceback.tb_lineno)
            traceback = traceback.tb_next
        return found


def wikilink(target: str | PurePath, alias: str | None = None) -> str:
    """`[[target|alias]]`, with a `.md` suffix dropped; a value that is a wikilink already is kept."""
    text = target.as_posix() if isinstance(target, PurePath) else str(target)
    if text.startswith("[[") and text.endswith("]]"):
        return text
    text = text.removesuffix(".md")
    if _LINK_BREAKERS.search(text):
        raise ValueError(f"cannot link to {text!r}: a note name cannot hold [ ] or |")
    if alias is None:
        return f"[[{text}]]"
    return f"[[{text}|{' '.join(_LINK_BREAKERS.sub(' ', str(alias)).split())}]]"


def yaml_str(value: Any) -> str:
    """`value` as a double-quoted YAML scalar: a string whatever it holds (`yes`, `1.0`, `[[x]]`, `: `)."""
    out = []
    for char in str(value):
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char == "\ufeff":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def fmt(value: Any, spec: str = ".4g") -> str:
    """A number formatted with `spec`; None as an em dash; anything else as text."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    return format(value, spec)


def md_cell(value: Any) -> str:
    """Text safe in a Markdown table cell: pipes escaped (a wikilink alias included), one line."""
    return " ".join(str(value).split()).replace("|", "\\|")
