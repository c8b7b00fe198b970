"""Jinja templates for the notes the tool writes, overridable per vault.

A vault's override folder (`templates_folder`, default `Templates/actadd-notes/`) is
searched first, the shipped `templates/` second, so a user overrides one template by
copying it there. User templates are data, not code: rendering always runs in Jinja's
immutable sandbox, so a template can neither reach Python internals nor change the
values it is given, and every failure is a TemplateError naming the file and line.

A template also cannot read outside its folder (a file or `{% include %}` through a link that
leads out is refused) or run unbounded: loop iterations and macro calls together are capped
(`MAX_STEPS`), as are the render's time (`MAX_SECONDS`), its output (`MAX_OUTPUT_CHARS`), the
size of what `*`, `**`, `+`, `~` and `%` build, and the numbers passed to calls and filters
(`MAX_NUMBER`: `"x".center(10**9)`).

Values are untrusted text, so the filters make them safe where they land:

    yaml_str   any value as one double-quoted YAML scalar (a frontmatter value)
    md_inline  text on one line of Markdown: no line break, region marker or Obsidian comment
               survives, nor a heading, rule or list marker at its start
    md_cell    md_inline for a table cell: pipes escaped, no start-of-line escapes
    md_block   several lines of text (an abstract, a comment), each made inert the same way;
               `md_block("> ")` continues a callout or quote
    wikilink   `[[target|alias]]`, refusing a target Obsidian cannot link
"""

from __future__ import annotations

import ast
import contextvars
import functools
import numbers
import os
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from actadd_notes._resources import shipped_dir
from actadd_notes.errors import TemplateError

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig

__all__ = [
    "MAX_NUMBER",
    "MAX_OUTPUT_CHARS",
    "MAX_SECONDS",
    "MAX_STEPS",
    "TemplateRenderer",
    "fmt",
    "md_block",
    "md_cell",
    "md_inline",
    "wikilink",
    "yaml_str",
]

MAX_STEPS = 1_000_000
"""Loop iterations and macro calls one render may take (the shipped templates take hundreds)."""
MAX_SECONDS = 10.0
MAX_OUTPUT_CHARS = 16 * 1024 * 1024
MAX_NUMBER = 1_000_000
_MAX_TEMPLATE_BYTES = 1024 * 1024
_MAX_POWER_BITS = 4096

_LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_PERCENTS = re.compile(r"%(?=%)")  # each `%` followed by another: `%%` starts a comment or a marker
_BLOCK_BREAKER = re.compile(r"^(?= {0,3}(?:#|[-=*_][-=*_ \t]*$))")  # a heading, a rule, a setext underline
_LEADING_MARKER = re.compile(r"^(?:[#>+*=_`~|-]|\d+(?=[.)]))")
_WIKILINK = re.compile(r"\[\[[^\[\]|\n%]+(?:\|[^\[\]\n%]*)?\]\]")
_LINK_BREAKERS = re.compile(r"[\[\]|]")
_HUGE_FORMAT = re.compile(r"%[^a-zA-Z%]*\d{7}|\{[^{}]*\d{7}[^{}]*\}")
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


class TemplateRenderer:
    """Renders `name` from the override folder if it has it, else from the shipped templates."""

    def __init__(self, override_dir: Path | None = None):
        self.search_path = [*([Path(override_dir)] if override_dir is not None else []), shipped_dir("templates")]
        self._env = _BoundedSandbox(
            loader=_FolderLoader(self.search_path),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # Markdown, not HTML
        )
        self._env.filters.update(
            wikilink=wikilink, yaml_str=yaml_str, fmt=fmt, md_cell=md_cell, md_inline=md_inline, md_block=md_block
        )
        self._env.filters = {name: _bounded_arguments(f) for name, f in self._env.filters.items()}
        self._env.globals.pop("lipsum", None)  # lipsum(n=10**9)

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
        token = _BUDGET.set(_Budget())
        try:
            return _collect(template.generate(**context))
        except TemplateError:
            raise
        except Exception as error:  # anything a template does wrong: undefined, sandbox, a filter's ValueError…
            filename, line = self._where(error) or (template.filename or name, None)
            at = f":{line}" if line else ""
            raise TemplateError(f"{filename}{at}: {type(error).__name__}: {error}") from None
        finally:
            _BUDGET.reset(token)

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


# --- filters ----------------------------------------------------------------------------------


def wikilink(target: str | PurePath, alias: str | None = None) -> str:
    """`[[target|alias]]`, with a `.md` suffix dropped; a value that is a well-formed wikilink
    already is kept. ValueError for a target Obsidian cannot link (`[`, `]`, `|`, a line break,
    `%%`); the alias is made safe instead."""
    text = target.as_posix() if isinstance(target, PurePath) else str(target)
    if _WIKILINK.fullmatch(text):
        return text
    text = text.removesuffix(".md")
    if _LINK_BREAKERS.search(text) or _LINE_BREAKS.search(text) or "%%" in text or _has_control(text):
        raise ValueError(f"cannot link to {text!r}: a note name cannot hold [ ] |, a line break or %%")
    if alias is None:
        return f"[[{text}]]"
    return f"[[{text}|{_inline(_LINK_BREAKERS.sub(' ', str(alias)))}]]"


def yaml_str(value: Any) -> str:
    """`value` as a double-quoted YAML scalar: a string whatever it holds (`yes`, `1.0`, `[[x]]`,
    `: `, `&a`, `!!float`, a line break, a character YAML may not hold), which reads back exactly."""
    out = []
    for char in str(value):
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif not _yaml_printable(char) or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def fmt(value: Any, spec: str = ".4g") -> str:
    """A number formatted with `spec`; None as an em dash; anything else as one line of text."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return md_cell(value)
    _check_format("{:" + spec + "}")
    return format(value, spec)


def md_inline(value: Any) -> str:
    """`value` as inline Markdown on one line: line breaks become spaces, `%%` (an Obsidian
    comment, or a region marker) is broken up, and a heading, rule, quote or list marker at
    its start is escaped, so the text can start a line and stay text."""
    text = _inline(value)
    return _LEADING_MARKER.sub(lambda m: "\\" + m.group() if not m.group().isdigit() else m.group() + "\\", text)


def md_cell(value: Any) -> str:
    """Text safe in a Markdown table cell: one line, `%%` broken up, pipes escaped (a wikilink alias included)."""
    return _inline(value).replace("|", "\\|")


def md_block(value: Any, prefix: str = "") -> str:
    """Several lines of Markdown text (an abstract, a comment), kept as lines (any line break made
    `\n`, every line after the first starting with `prefix`: `"> "` inside a callout), with what
    could break the note's structure made inert: `%%` (a comment or region marker), a heading, a
    setext underline or rule (`---`, `===`). Lists and emphasis stay Markdown."""
    lines = [_BLOCK_BREAKER.sub(r"\\\g<0>", _PERCENTS.sub("%\u200b", line)) for line in _LINE_BREAKS.split(str(value))]
    return ("\n" + prefix).join(lines)


def _inline(value: Any) -> str:
    text = " ".join(_LINE_BREAKS.sub(" ", str(value)).split())
    return _PERCENTS.sub("%\u200b", text)


def _yaml_printable(char: str) -> bool:
    """YAML 1.2's printable set: what a YAML stream may hold as it is."""
    code = ord(char)
    return (
        code in (0x09, 0x0A, 0x0D, 0x85)
        or 0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


# --- bounds --------------------------------------------------------------------------------------


class _Budget:
    """What one render may still spend."""

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise SecurityError(f"the template took more than {MAX_STEPS:,} loop iterations and macro calls")
        if self.steps % 1024 == 0:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"the template ran longer than {MAX_SECONDS:g} s")


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _collect(chunks: Iterator[str]) -> str:
    out, size = [], 0
    budget = _BUDGET.get()
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise SecurityError(f"the template wrote more than {MAX_OUTPUT_CHARS:,} characters")
        if budget is not None:
            budget.check_time()
        out.append(chunk)
    return "".join(out)


class _Ticks(ast.NodeTransformer):
    """Counts every loop iteration and function call of a compiled template (`{% for %}` is a
    Python `for`, a macro a `def`), and bounds every `~` join."""

    def _tick(self, node: Any) -> Any:
        self.generic_visit(node)
        tick = ast.Expr(ast.Call(ast.Attribute(ast.Name("environment", ast.Load()), "tick", ast.Load()), [], []))
        node.body.insert(0, ast.copy_location(tick, node))
        return node

    visit_For = visit_While = visit_FunctionDef = _tick

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in ("str_join", "markup_join"):
            join = ast.Attribute(ast.Name("environment", ast.Load()), "bounded_" + node.func.id, ast.Load())
            node.func = ast.copy_location(join, node.func)
        return node


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the bounds the module docstring lists."""

    intercepted_binops = frozenset(("*", "**", "+", "%"))

    def _compile(self, source: str, filename: str) -> Any:
        tree = ast.fix_missing_locations(_Ticks().visit(ast.parse(source, filename)))
        return compile(tree, filename, "exec")

    @staticmethod
    def tick() -> None:
        _tick()

    @staticmethod
    def bounded_str_join(pieces: Any) -> str:
        return _bounded_size(jinja2.runtime.str_join(pieces))

    @staticmethod
    def bounded_markup_join(pieces: Any) -> str:
        return _bounded_size(jinja2.runtime.markup_join(pieces))

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**" and _power_bits(left, right) > _MAX_POWER_BITS:
            raise SecurityError(f"{left!r} ** {right!r} is too large a number")
        if operator_ == "*" and _repeated_size(left, right) > MAX_OUTPUT_CHARS:
            raise SecurityError(f"repeating a value {right!r} times builds too much")
        if operator_ == "%":
            _check_format(left)
        result = super().call_binop(context, operator_, left, right)
        return _bounded_size(result) if operator_ == "+" else result

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_numbers(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        _check_format(getattr(value, "__self__", None))  # `"{:999999999}".format(1)`
        return super().wrap_str_format(value)


def _bounded_arguments(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that refuses huge numbers among its arguments (the value itself aside)."""

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        first = 1 + int(getattr(function, "jinja_pass_arg", None) is not None)  # the context or environment
        _check_numbers(args[first:], kwargs)
        if function.__name__ == "do_format" and args:  # `"%999999999d" | format(1)`
            _check_format(args[first - 1])
        return _bounded_size(function(*args, **kwargs))

    return bounded


def _check_format(template: Any) -> None:
    """Refuse a `%` or `{}` format whose width or precision has seven digits or more."""
    if isinstance(template, str) and _HUGE_FORMAT.search(template):
        raise SecurityError(f"format {template[:40]!r} asks for more than {MAX_NUMBER:,} characters")


def _check_numbers(args: Any, kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and _too_large(value):
            raise SecurityError(f"{value!r} is larger than a template may pass ({MAX_NUMBER:,})")


def _too_large(value: numbers.Real) -> bool:
    try:
        return abs(float(value)) > MAX_NUMBER
    except OverflowError:  # an int beyond every float
        return True


def _bounded_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"the template built a value of more than {MAX_OUTPUT_CHARS:,} items")
    return value


def _power_bits(left: Any, right: Any) -> float:
    """About how many bits `left ** right` takes, for integers (a float overflows on its own)."""
    if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        return float(right) * left.bit_length()
    return 0.0


def _repeated_size(left: Any, right: Any) -> int:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int) and not isinstance(count, bool):
            return len(sequence) * count
    return 0


class _FolderLoader(jinja2.BaseLoader):
    """Loads templates from folders, never through a link that leads out of its folder, and
    only plain files of reasonable size (a FIFO or `/dev/zero` behind a name cannot hang it)."""

    def __init__(self, folders: list[Path]):
        self.folders = folders

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)
        for folder in self.folders:
            path = Path(folder).joinpath(*pieces)
            if not os.path.lexists(path):
                continue
            real_folder = os.path.realpath(folder)
            if not os.path.realpath(path).startswith(real_folder + os.sep):
                raise TemplateError(f"{path}: a link to {os.path.realpath(path)}, outside {folder}; refused")
            source, mtime = _read_template(path)
            return source, str(path), lambda path=path, mtime=mtime: _mtime(path) == mtime
        raise jinja2.TemplateNotFound(template)


def _read_template(path: Path) -> tuple[str, int]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TemplateError(f"{path}: not a plain file; refused")
            if info.st_size > _MAX_TEMPLATE_BYTES:
                raise TemplateError(f"{path}: {info.st_size:,} bytes, more than a template may have")
            data = os.read(fd, _MAX_TEMPLATE_BYTES + 1)
        finally:
            os.close(fd)
        return data.decode("utf-8"), info.st_mtime_ns
    except (OSError, UnicodeDecodeError) as error:
        raise TemplateError(f"{path}: cannot read the template: {error}") from None


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
