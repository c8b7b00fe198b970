"""Jinja templates for the notes the tool writes, overridable per vault.

A vault's override folder (`templates_folder`, default `Templates/actadd-notes/`) is
searched first, the shipped `templates/` second, so a user overrides one template by
copying it there. User templates are data, not code: rendering always runs in Jinja's
immutable sandbox, so a template can neither reach Python internals nor change the
values it is given, and every failure is a TemplateError naming the file and line.

A template also cannot read outside its folder (a file or `{% include %}` through a link that
leads out is refused) or run unbounded. Each bound is checked before the step that would pass it,
since one Python step (`str.replace`, `==`, `json.dumps`) can allocate gigabytes or run for hours
where the time limit cannot interrupt it:

    MAX_STEPS         loop iterations and macro calls, together
    MAX_SECONDS       the render's time
    MAX_OUTPUT_CHARS  the output, and any text one step builds: `*`, `+`, `~`, `%`, `str.format`,
                      `replace`, `join`, `indent`, `center`, `tojson`… are predicted from their
                      arguments and refused before they run
    MAX_NUMBER        the numbers passed to calls and filters (`"x".center(10**9)`)
    MAX_FORMAT_WIDTH  a `%` or `str.format` width or precision, given in the format or as an
                      argument (`"%*d" % (10**9, 1)`, `"{0:{1}}".format(1, "999999999")`)
    MAX_ITEMS         the items of a value, counted through every nesting, a part shared twice
                      counted twice (`[a, a]` doubled 40 times holds 2**40), and the objects one step
                      makes (`"…" | list`, `.split()`): what a comparison, a hash, `tojson` or
                      printing walks through
    MAX_DEPTH         how deeply a value nests
    MAX_BUILT         the bytes of text and lists all steps together build, kept or not (only a
                      value a namespace drops, and nothing else holds, is given back): values kept
                      under many names or down a recursion cannot add up, while `ns.x = ns.x ~ row`
                      in a loop counts what it adds

Every value a template hands to a filter, test, call, operator, comparison, dict key, namespace or
the output is measured first: its items, depth and printed length. A render that passes a bound
stops with a TemplateError naming the file, the line and the bound.

Every note the tool writes is rendered here, so here its properties are read back, with
`Note.parse` as every note is read: a template whose output has properties the tool cannot read
(invalid YAML, not a mapping, aliases) is a TemplateError naming it, before any note is written.

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
import collections
import contextvars
import functools
import itertools
import numbers
import os
import re
import stat
import sys
import time
import types
import unicodedata
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, Sized, ValuesView
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import jinja2
from jinja2 import pass_environment
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.loaders import split_template_path
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup

from actadd_notes._resources import shipped_dir
from actadd_notes.errors import TemplateError
from actadd_notes.vault.notes import Note, UnreadableProperties

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig

__all__ = [
    "MAX_BUILT",
    "MAX_DEPTH",
    "MAX_FORMAT_WIDTH",
    "MAX_ITEMS",
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
MAX_FORMAT_WIDTH = 10_000
"""A format width or precision: a note's table cell needs tens."""
MAX_ITEMS = 1_000_000
"""Items of one value through every nesting, and objects one step makes: about 80 MB at most."""
MAX_DEPTH = 100
MAX_BUILT = 64 * 1024 * 1024
"""Bytes of text and lists one render may build in all (the shipped templates build tens of KiB)."""
_MAX_TEMPLATE_BYTES = 1024 * 1024
_MAX_POWER_BITS = 4096

_LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_PERCENTS = re.compile(r"%(?=%)")  # each `%` followed by another: `%%` starts a comment or a marker
_BLOCK_BREAKER = re.compile(r"^(?= {0,3}(?:#|[-=*_][-=*_ \t]*$))")  # a heading, a rule, a setext underline
_LEADING_MARKER = re.compile(r"^(?:[#>+*=_`~|-]|\d+(?=[.)]))")
_WIKILINK = re.compile(r"\[\[[^\[\]|\n%]+(?:\|[^\[\]\n%]*)?\]\]")
_LINK_BREAKERS = re.compile(r"[\[\]|]")
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
        self._env.bound()

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
            text = _collect(template.generate(**context))
        except TemplateError:
            raise
        except Exception as error:  # anything a template does wrong: undefined, sandbox, a filter's ValueError…
            filename, line = self._where(error) or (template.filename or name, None)
            at = f":{line}" if line else ""
            raise TemplateError(f"{filename}{at}: {type(error).__name__}: {error}") from None
        finally:
            _BUDGET.reset(token)
        _check_properties(text, template.filename or name)
        return text

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


def _check_properties(text: str, filename: str) -> None:
    """Every note the tool writes is rendered here, so this is where a template that writes properties
    the tool cannot read back (invalid YAML, not a mapping, aliases) fails: before the note is written,
    not when the next run reads it. Read with `Note.parse`, the reader of every note."""
    try:
        Note.parse(text, Path("the rendered note"))
    except UnreadableProperties as error:
        raise TemplateError(f"{filename}: renders properties the tool cannot read back: {error}") from None


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
    _spec_chars(value, spec)  # refuses a width or precision over MAX_FORMAT_WIDTH
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
#
# A template is bounded where Python would do unbounded work in one step, before that step: the
# time limit is only checked between steps, and a single `str.replace` or `==` can allocate
# gigabytes or run for hours. Three kinds of checks, all raising SecurityError:
#
#   sizes     every value a template hands to a filter, test, call, operator, comparison, dict key,
#             namespace or the output is measured (`_size`): its items counted through every nesting
#             (a list held twice counts twice, so `[a, a]` doubled 40 times is 2**40 items, not 41
#             objects), its depth and the characters it prints as. What one step would build is
#             predicted from these before it runs (`_FILTER_SIZES`, `_METHOD_SIZES`, the operators).
#   formats   a `%` or `str.format` width or precision, from the template or from an argument
#             (`%*d`, `{0:{1}}`), is at most MAX_FORMAT_WIDTH.
#   totals    what the operators, filters and calls build is counted in bytes, so values kept under
#             many names or in a recursion cannot add up past MAX_BUILT.


class _Budget:
    """What one render may still spend, and the sizes of the large values it has measured."""

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS
        self.built = 0
        # id -> (value, size): a value is kept alive while it is remembered, so its id is not reused;
        # templates cannot change a list or dict (the immutable sandbox), so a size stays true
        self.sizes: dict[int, tuple[Any, _Size]] = {}
        self.kept = 0

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise SecurityError(f"the template took more than {MAX_STEPS:,} loop iterations and macro calls")
        if self.steps % 256 == 0:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"the template ran longer than {MAX_SECONDS:g} s")

    def charge(self, nbytes: int) -> None:
        """Count what a step has built."""
        self.built += nbytes
        self.afford(0)

    def afford(self, nbytes: float) -> None:
        """Refuse a step that would build `nbytes` more than MAX_BUILT allows, before it runs."""
        if self.built + nbytes > MAX_BUILT:
            raise SecurityError(f"the template built more than {MAX_BUILT >> 20} MiB of text and lists (MAX_BUILT)")

    def release(self, value: Any) -> None:
        """Give back what `value` counted, if the caller's reference is the last one (besides the
        memo's, which is dropped): it is freed when the caller lets go of it."""
        remembered = self.sizes.get(id(value))
        if sys.getrefcount(value) <= 3 + (remembered is not None):  # the caller's, ours, getrefcount's
            if remembered is not None:
                del self.sizes[id(value)]
                self.kept -= remembered[1].items
            self.built = max(self.built - sys.getsizeof(value), 0)

    def remember(self, value: Any, size: _Size) -> None:
        if self.kept + size.items > MAX_ITEMS:  # keep at most MAX_ITEMS items alive for the memo's sake
            self.sizes.clear()
            self.kept = 0
        self.sizes[id(value)] = (value, size)
        self.kept += size.items


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _check_time() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.check_time()


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


class _Size(NamedTuple):
    """A value's items (through every nesting, repeats counted), the characters it prints as
    (`str` for a string, about `repr` inside a container), and its depth."""

    items: int
    chars: int
    depth: int


_ITEM_BYTES = 56  # a new small object: a short string, a float, a pair
_MAX_WRAP_COPY = 10**10  # characters textwrap may copy cutting long words, one line at a time (a few seconds)
_LEAF = _Size(0, 64, 0)  # a date, a path, a macro…: what an object of no known size is taken to print as
_SCALARS = (str, int, float, bool, type(None))


def _size(value: Any) -> _Size:
    """The value's size, or SecurityError when it holds more than MAX_ITEMS items, nests deeper
    than MAX_DEPTH or prints as more than MAX_OUTPUT_CHARS characters. Shared parts are measured
    once per value (and large ones once per render), so a value of 2**40 items costs 40 steps."""
    if isinstance(value, str):
        return _Size(0, len(value), 0)
    size = _measure(value, 0, {}, _BUDGET.get())
    _check_time()
    return size


def _checked(value: Any) -> Any:
    """`value`, once measured: for the operands of comparisons and dict keys (hashing a tuple)."""
    if type(value) not in _SCALARS:
        _size(value)
    return value


def _text(value: Any) -> int:
    """How many characters `str(value)` has, about, without building it."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind is float or kind is bool or value is None:
        return 24
    return _size(value).chars


def _measure(value: Any, depth: int, seen: dict[int, tuple[Any, _Size]], budget: _Budget | None) -> _Size:
    scalar = _scalar_size(value)
    if scalar is not None:
        return scalar
    children = _children(value)
    if children is None:
        return _LEAF
    key = id(value)
    known = seen.get(key) or (budget.sizes.get(key) if budget is not None else None)
    if known is not None:
        return known[1]
    if depth >= MAX_DEPTH:
        raise SecurityError(f"a value nests more than {MAX_DEPTH} levels deep (MAX_DEPTH)")
    items, chars, deepest = 0, 2 if type(value) in (list, tuple, dict, set) else 34, 0  # 34: `CommentedMap(…)`
    for child in children:
        kind = type(child)
        if kind is str:  # the common cases first: this runs once per item of every large value
            chars += len(child) + 4
        elif kind is float or kind is bool or child is None:
            chars += 26
        elif kind is int:
            chars += child.bit_length() // 3 + 4
        else:
            inner = _measure(child, depth + 1, seen, budget)
            items += inner.items
            chars += inner.chars + 2
            deepest = inner.depth if inner.depth > deepest else deepest
        items += 1
        if items > MAX_ITEMS:
            raise SecurityError(
                f"a value holds more than {MAX_ITEMS:,} items, counting a shared part each time it appears (MAX_ITEMS)"
            )
        if chars > MAX_OUTPUT_CHARS:
            raise SecurityError(f"a value would print as more than {MAX_OUTPUT_CHARS:,} characters")
    size = _Size(items, chars, deepest + 1)
    seen[key] = (value, size)  # keeps `value` alive: no other object takes its id while `seen` lives
    if budget is not None and items >= 16 and isinstance(value, list | tuple | dict | set | frozenset):
        budget.remember(value, size)
    return size


def _scalar_size(value: Any) -> _Size | None:
    """The size of text or a number as it prints inside a container (`repr`); None for anything else."""
    if isinstance(value, str):
        return _Size(0, len(value) + 2, 0)
    if isinstance(value, bytes | bytearray):
        return _Size(0, 4 * len(value) + 3, 0)
    if isinstance(value, bool) or value is None:
        return _Size(0, 5, 0)
    if isinstance(value, int):
        return _Size(0, value.bit_length() // 3 + 2, 0)
    if isinstance(value, float):
        return _Size(0, 24, 0)
    return None


def _children(value: Any) -> Iterable[Any] | None:
    """What a container holds (a mapping's keys and values); None for anything else. A generator
    is not looked into: that would use it up."""
    if isinstance(value, Namespace):
        value = object.__getattribute__(value, "_Namespace__attrs")
    if isinstance(value, Mapping):
        return itertools.chain.from_iterable(value.items())
    if isinstance(value, list | tuple | set | frozenset | collections.deque | KeysView | ValuesView | ItemsView):
        return value
    return None


def _charged(value: Any, *given: Any, shallow: bool = False) -> Any:
    """`value`, counted against MAX_BUILT when it is text or a container a step has just built (not
    one of the values it was `given` back). Unless `shallow` (`+` and `*` of lists: the same items
    again), a container is counted as if each item were a new small object (`.split()`, `| list` of
    a string's characters, `| batch(1)` make them), and an item that is a list as its own array of
    references (`| batch(1000)`)."""
    if not isinstance(value, str | bytes | list | tuple | dict):
        return value
    for other in given:
        if value is other:
            return value
    if len(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"the template built a value of more than {MAX_OUTPUT_CHARS:,} characters or items")
    budget = _BUDGET.get()
    if budget is not None:
        nbytes = sys.getsizeof(value)
        if not shallow and not isinstance(value, str | bytes):
            nbytes += sum(sys.getsizeof(item) if type(item) in (list, tuple) else _ITEM_BYTES for item in value)
        budget.charge(nbytes)
    return value


def _within(chars: float, what: str, *, builds: float | None = None) -> None:
    """Refuse, before it runs, a step that would build more than MAX_OUTPUT_CHARS characters, or
    whose bytes (`builds`, at least; its characters by default) would take the render past MAX_BUILT."""
    if chars > MAX_OUTPUT_CHARS:
        raise SecurityError(f"{what} would build more than {MAX_OUTPUT_CHARS:,} characters")
    budget = _BUDGET.get()
    if budget is not None:
        budget.afford(chars if builds is None else builds)
        budget.check_time()


def _few(items: float, what: str, *, new: bool = True) -> None:
    """Refuse, before it runs, a step that would make more than MAX_ITEMS objects (a list of a
    string's characters, its words, its lines), or whose new objects would pass MAX_BUILT."""
    if items > MAX_ITEMS:
        raise SecurityError(f"{what} would make more than {MAX_ITEMS:,} items (MAX_ITEMS)")
    budget = _BUDGET.get()
    if budget is not None and new:
        budget.afford(items * (8 + _ITEM_BYTES))


class _Counted:
    """An iterable handed to a step that builds from it: past MAX_ITEMS items, or, for a join,
    past MAX_OUTPUT_CHARS characters of text, the render stops before the step builds it."""

    def __init__(self, iterable: Iterable[Any], separator: int | None = None):
        self._iterator = iter(iterable)
        self._separator = separator
        self._items = self._chars = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self._iterator)
        self._items += 1
        _few(self._items, "iterating", new=False)
        if self._separator is not None:
            self._chars += _text(item) + self._separator
            if self._chars > MAX_OUTPUT_CHARS + self._separator:
                raise SecurityError(f"a join would build more than {MAX_OUTPUT_CHARS:,} characters")
        if self._items % 4096 == 0:
            _check_time()
        return item


def _counted(value: Any, separator: int | None = None) -> Any:
    """`value` to iterate over with a bound: a string of at most MAX_ITEMS characters as it is, a
    generator wrapped; a list or dict as it is (measured already), unless text is to be counted."""
    if isinstance(value, str):
        _few(len(value), "a string's characters")
    if separator is None and isinstance(value, Sized):
        return value
    return _Counted(value, separator)


# -- formats


_SPEC_NUMBERS = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0+ -]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<type>.)", re.DOTALL
)


def _width(number: Any) -> int:
    """A format width or precision (digits from a format, or a `*` argument), refused above
    MAX_FORMAT_WIDTH; a long run of digits is refused as it is, without making it a number."""
    if isinstance(number, str) and len(number) > len(str(MAX_FORMAT_WIDTH)):
        shown = number if len(number) <= 12 else number[:12] + "…"
    else:
        value = abs(int(number))
        if value <= MAX_FORMAT_WIDTH:
            return value
        shown = f"{value:,}"
    raise SecurityError(f"a format width or precision of {shown} is more than {MAX_FORMAT_WIDTH:,} (MAX_FORMAT_WIDTH)")


def _spec_chars(value: Any, spec: str) -> int:
    """About how long `format(value, spec)` is; refuses a width or precision over MAX_FORMAT_WIDTH
    (any number in the spec: a date's strftime spec has none that large)."""
    widest = max((_width(number) for number in _SPEC_NUMBERS.findall(spec)), default=0)
    return 2 * _text(value) + widest + 330 + 4 * len(spec)  # 330: the digits of the largest float


def _percent_chars(template: Any, values: Any) -> int:
    """About how long `template % values` is (`%s`, `%-*d`, `%(key)s`), each width and precision
    checked, `*` ones included; 0 for a left operand that is not text (`7 % 3`)."""
    if isinstance(template, bytes | bytearray):
        template = bytes(template).decode("latin-1")
    if not isinstance(template, str):
        return 0
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else None
    total = len(template)
    for spec in _PERCENT_SPEC.finditer(template):
        if spec.group("type") == "%" and spec.group("key") is None:
            continue
        numbers = []
        for part in ("width", "precision"):
            given = spec.group(part)
            if given == "*":
                numbers.append(_width(positional.pop(0) if positional else 0))
            elif given:
                numbers.append(_width(given))
        if spec.group("key") is not None:
            value = mapping.get(spec.group("key")) if mapping is not None else None
        else:
            value = positional.pop(0) if positional else mapping
        total += max(numbers, default=0) + 2 * _text(value) + 330
    _within(total, "a %-format")
    return total


class _BoundedFormatter(SandboxedFormatter):
    """`str.format` in the sandbox: each field's spec is checked once nested fields are filled in
    (`{0:{1}}`), and the text is counted field by field (`{0}{0}{0}…` repeats a value)."""

    chars = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self.chars = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            _text(value)  # `!r` of a huge or shared value
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.chars += _spec_chars(value, format_spec)
        _within(self.chars, "a str.format")
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


# -- what a filter, a text method, an operator would build


def _text_in(value: Any, what: str) -> int:
    """The characters of a text a step splits into words or lines, at most MAX_ITEMS."""
    chars = _text(value)
    _few(chars, what)
    return chars


def _line_count(text: Any) -> int:
    if isinstance(text, bytes | bytearray):
        return text.count(b"\n") + text.count(b"\r") + 1
    text = str(text) if not isinstance(text, str) else text
    return sum(text.count(c) for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029") + 1


def _replaced_chars(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    """`s.replace(old, new, count)`: each match of `old` (each gap, for an empty one) becomes `new`.
    The filter takes any value as text: then every character is taken to match."""
    old_chars = len(old) if isinstance(old, str | bytes) else _text(old)
    new_chars = len(new) if isinstance(new, str | bytes) else _text(new)
    text: Any = s
    if isinstance(s, str | bytes) and isinstance(old, type(s)):
        chars, times = len(s), (text.count(old) if old else len(s) + 1)
    else:
        chars = _text(s)
        times = chars + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return chars + times * max(new_chars - old_chars, 0)


def _indented_chars(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    lines = _line_count(s)
    _few(lines, "indenting")
    return _text(s) + (lines + 1) * (len(width) if isinstance(width, str) else max(int(width), 0))


def _json_chars(value: Any, indent: Any = None) -> int:
    size = _size(value)
    step = len(indent) if isinstance(indent, str) else max(int(indent or 0), 0)
    return 12 * size.chars + size.items * (size.depth * step + 2)  # 12: `\ud83d\ude00` for one character


def _pprint_chars(value: Any) -> int:
    size = _size(value)
    return 2 * size.chars + size.items * (size.depth + 2)


def _wrapped_chars(
    s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, break_on_hyphens: Any = True
) -> int:
    chars = _text_in(s, "wrapping")
    if break_long_words and chars * chars > 2 * _MAX_WRAP_COPY * max(int(width), 1):  # quadratic in a long word
        raise SecurityError(f"wrapping {chars:,} characters at width {width} may copy them for every line")
    return chars * (1 + len(str(wrapstring) if wrapstring is not None else "\n"))


def _urlized_chars(
    value: Any,
    trim_url_limit: Any = None,
    nofollow: bool = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> int:
    chars = _text_in(value, "urlize")
    extra = len(str(target or "")) + len(str(rel or "")) + 64
    return 3 * chars + (chars // 2 + 1) * extra


def _times(factor: int) -> Callable[..., int]:
    """A filter whose text is at most `factor` times its value's (`upper`: `ß` is `SS`; `escape`: `&#34;`)."""
    return lambda value, *args, **kwargs: factor * _text(value)


def _words(factor: int) -> Callable[..., int]:
    """The same, for a filter that splits its text into words or lines first."""
    return lambda value, *args, **kwargs: factor * _text_in(value, "splitting a text")


_FILTER_SIZES: dict[str, Callable[..., float]] = {
    "replace": _replaced_chars,
    "indent": _indented_chars,
    "center": lambda value, width=80: max(_text(value), int(width)),
    "format": lambda value, *args, **kwargs: _percent_chars(str(value), kwargs or args),
    "truncate": lambda s, length=255, killwords=False, end="...", leeway=None: min(_text(s), length) + len(str(end)),
    "wordwrap": _wrapped_chars,
    "urlize": _urlized_chars,
    "tojson": _json_chars,
    "pprint": _pprint_chars,
    "string": _times(1),
    "safe": _times(1),
    "trim": _times(1),
    "capitalize": _times(3),
    "lower": _times(3),
    "upper": _times(3),
    "title": _words(3),
    "striptags": _words(1),
    "wordcount": _words(0),
    "escape": _times(6),
    "e": _times(6),
    "forceescape": _times(6),
    "xmlattr": _times(6),
    "urlencode": _times(12),
    "yaml_str": _words(10),  # a character at a time, in Python
    "md_inline": _words(2),
    "md_cell": _words(4),
    "md_block": lambda value, prefix="": 3 * _text(value) + _line_count(value) * _text(prefix),
    "wikilink": lambda target, alias=None: 2 * (_text(target) + _text(alias)) + 8,
    "fmt": lambda value, spec=".4g": _spec_chars(value, spec),
}
# Filters that make an object per item of their value: a string's characters count as items.
_ITERATING = frozenset(
    {"batch", "dictsort", "groupby", "list", "map", "max", "min", "reject", "rejectattr", "select", "selectattr"}
    | {"slice", "sort", "sum", "unique"}
)


def _split_items(s: Any, sep: Any = None, maxsplit: int = -1) -> int:
    if isinstance(maxsplit, int) and maxsplit >= 0:
        return maxsplit + 1
    return s.count(sep) + 1 if sep else len(s) // 2 + 1


def _translated_chars(s: Any, table: Any, *_: Any) -> int:
    values = table.values() if isinstance(table, Mapping) else table if isinstance(table, list | tuple) else ()
    longest = max((len(v) for v in values if isinstance(v, str | bytes)), default=1)
    return len(s) * max(longest, 1)


# Text methods (`"x".replace(…)`), by name: what they would build, in characters.
_METHOD_SIZES: dict[str, Callable[..., float]] = {
    "replace": _replaced_chars,
    "center": lambda s, width, fillchar=" ": max(len(s), width),
    "ljust": lambda s, width, fillchar=" ": max(len(s), width),
    "rjust": lambda s, width, fillchar=" ": max(len(s), width),
    "zfill": lambda s, width: max(len(s), width),
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(tabsize, 0),
    "translate": _translated_chars,
    "encode": lambda s, encoding="utf-8", errors="strict": 10 * len(s),
    "decode": lambda s, encoding="utf-8", errors="strict": 4 * len(s),
    "hex": lambda s, *args: 3 * len(s),
    **{
        name: (lambda s, *args, **kwargs: 3 * len(s))
        for name in ("upper", "lower", "title", "capitalize", "swapcase", "casefold")
    },
}
# …and what they would make in items.
_METHOD_ITEMS: dict[str, Callable[..., int]] = {
    "split": _split_items,
    "rsplit": _split_items,
    "splitlines": lambda s, keepends=False: _line_count(s),
}


def _before_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a text method's call before it runs; returns the arguments to call it with (a join's
    iterable counted as it goes)."""
    receiver, name = method.__self__, method.__name__
    if name == "fromkeys" and args:  # `{}.fromkeys(a_long_string)`
        return (_counted(args[0]), *args[1:])
    if isinstance(receiver, str | bytes | bytearray):
        if name == "join" and args:
            return (_counted(args[0], len(receiver)), *args[1:])
        if name in _METHOD_SIZES:
            factor = 6 if isinstance(receiver, Markup) else 1  # Markup escapes what it is given
            _within(factor * _METHOD_SIZES[name](receiver, *args, **kwargs), f".{name}()")
        elif name in _METHOD_ITEMS:
            _few(_METHOD_ITEMS[name](receiver, *args, **kwargs), f".{name}()")
    return args


def _binop_size(operator_: str, left: Any, right: Any) -> _Size | None:
    """Refuse an operator whose result would be too large, before it is computed; the size of the
    list it builds, if it builds one (from its operands' sizes, so `ns.rows + [row]` in a loop is
    not measured all over again at every step)."""
    if operator_ == "**" and _power_bits(left, right) > _MAX_POWER_BITS:
        raise SecurityError(f"{left!r} ** {right!r} is too large a number")
    if operator_ == "*":
        if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > _MAX_POWER_BITS:
            raise SecurityError(f"a product of more than {_MAX_POWER_BITS} bits is too large a number")
        for sequence, count in ((left, right), (right, left)):
            if _is_int(count) and isinstance(sequence, str | bytes):
                _within(len(sequence) * max(count, 0), "repeating a text")
            elif _is_int(count) and isinstance(sequence, list | tuple):
                size = _size(sequence)
                times = max(count, 0)
                _within(size.chars * times, "repeating a list", builds=8 * len(sequence) * times)  # prints as
                _few(size.items * times, "repeating a list", new=False)
                return _Size(size.items * times, size.chars * times, size.depth)
    if operator_ == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            _within(len(left) + len(right), "joining two texts")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            one, two = _size(left), _size(right)
            _within(one.chars + two.chars, "joining two lists", builds=8 * (len(left) + len(right)))
            _few(one.items + two.items, "joining two lists", new=False)
            return _Size(one.items + two.items, one.chars + two.chars, max(one.depth, two.depth))
    if operator_ == "%":
        _percent_chars(left, right)
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _power_bits(left: Any, right: Any) -> float:
    """About how many bits `left ** right` takes, for integers (a float overflows on its own)."""
    if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        return float(right) * left.bit_length()
    return 0.0


def _check_numbers(args: Any, kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if (kind is int or kind is float or isinstance(value, numbers.Real)) and _too_large(value):
            raise SecurityError(f"{value!r} is larger than a template may pass ({MAX_NUMBER:,})")


def _too_large(value: numbers.Real) -> bool:
    try:
        return abs(float(value)) > MAX_NUMBER
    except OverflowError:  # an int beyond every float
        return True


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that measures what it is given and refuses, before running, to build too much."""
    first = int(getattr(function, "jinja_pass_arg", None) is not None)  # the context or environment
    size = _FILTER_SIZES.get(name)
    iterating = name in _ITERATING

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        given = args[first:]
        _check_numbers(given[1:], kwargs)
        for value in (*given, *kwargs.values()):
            if type(value) not in _SCALARS:
                _size(value)
        if given and (iterating or name == "join"):
            separator = len(str(given[1] if len(given) > 1 else kwargs.get("d", ""))) if name == "join" else None
            args = (*args[:first], _counted(given[0], separator), *given[1:])
        if size is not None:
            try:
                predicted = size(*given, **kwargs)
            except TypeError:  # arguments the filter refuses itself: let it say so
                predicted = 0
            _within(predicted, f"the {name} filter")
        return _charged(function(*args, **kwargs), *given)

    return bounded


def _bounded_test(function: Callable[..., Any]) -> Callable[..., Any]:
    """A test (`is eq`, `is in`, `select("eq", …)`) that measures what it compares."""

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _checked(value)
        return function(*args, **kwargs)

    return bounded


@pass_environment
def _bounded_sum(environment: jinja2.Environment, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's `sum`, but lists are gathered once, not copied at every step (`sum(start=[])` over
    a hundred thousand lists is quadratic in C, where the time limit cannot stop it)."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, list | tuple):
        return sum(iterable, start)
    gathered = list(start)
    for item in iterable:
        if not isinstance(item, type(start) if type(start) in (list, tuple) else list | tuple):
            return start + item  # the TypeError `+` gives
        gathered.extend(item)
        _few(len(gathered), "a sum", new=False)
    return gathered if isinstance(start, list) else tuple(gathered)


class _CheckedNamespace(Namespace):
    """`namespace()`, measuring what `{% set ns.x = … %}` stores, so a value doubled in a loop is
    stopped where it grows, not where it is used. The value it replaces, once nothing else holds it,
    is freed: what it counted against MAX_BUILT is given back, so `ns.x = ns.x ~ row` in a loop
    counts what it adds, not every intermediate text."""

    def __setitem__(self, name: str, value: Any) -> None:
        _checked(value)
        old = object.__getattribute__(self, "_Namespace__attrs").get(name)
        super().__setitem__(name, value)
        budget = _BUDGET.get()
        if budget is not None and isinstance(old, str | bytes | list | tuple | dict):
            budget.release(old)


class _Ticks(ast.NodeTransformer):
    """Counts every loop iteration and function call of a compiled template (`{% for %}` is a
    Python `for`, a macro a `def`), bounds every `~` join, and measures the operands of every
    comparison and the keys of every dict literal."""

    _COMPARING = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)

    def _tick(self, node: Any) -> Any:
        self.generic_visit(node)
        tick = ast.Expr(ast.Call(self._environment("tick"), [], []))
        node.body.insert(0, ast.copy_location(tick, node))
        return node

    visit_For = visit_While = visit_FunctionDef = _tick

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in ("str_join", "markup_join"):
            node.func = ast.copy_location(self._environment("bounded_" + node.func.id), node.func)
        return node

    def visit_Compare(self, node: ast.Compare) -> Any:
        self.generic_visit(node)
        if any(isinstance(op, self._COMPARING) for op in node.ops):
            node.left = self._checked(node.left)
            node.comparators = [self._checked(operand) for operand in node.comparators]
        return node

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        """`text[1:]`: Jinja slices in Python, not through `getitem`, and a slice is a new value."""
        self.generic_visit(node)
        if isinstance(node.slice, ast.Slice) and isinstance(node.ctx, ast.Load):
            bounds = [part or ast.Constant(None) for part in (node.slice.lower, node.slice.upper, node.slice.step)]
            key = ast.Call(ast.Name("slice", ast.Load()), bounds, [])
            return ast.copy_location(ast.Call(self._environment("sliced"), [node.value, key], []), node)
        return node

    def visit_Dict(self, node: ast.Dict) -> Any:
        self.generic_visit(node)
        node.keys = [None if key is None else self._checked(key) for key in node.keys]
        return node

    def _checked(self, node: ast.expr) -> ast.expr:
        return ast.copy_location(ast.Call(self._environment("checked"), [node], []), node)

    @staticmethod
    def _environment(name: str) -> ast.Attribute:
        return ast.Attribute(ast.Name("environment", ast.Load()), name, ast.Load())


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the bounds the module docstring lists."""

    intercepted_binops = frozenset(("*", "**", "+", "%"))

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self.printable, **options)
        self.globals["namespace"] = _CheckedNamespace
        self.globals.pop("lipsum", None)  # lipsum(n=10**9)
        self.filters["sum"] = _bounded_sum

    def _compile(self, source: str, filename: str) -> Any:
        tree = ast.fix_missing_locations(_Ticks().visit(ast.parse(source, filename)))
        return compile(tree, filename, "exec")

    def bound(self) -> None:
        """Wrap every filter and test, once the renderer has added its own."""
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}
        self.tests = {name: _bounded_test(cast("Callable[..., Any]", test)) for name, test in self.tests.items()}

    tick = staticmethod(_tick)
    checked = staticmethod(_checked)

    @staticmethod
    def printable(value: Any) -> Any:
        """Every `{{ … }}` goes through here before `str()`: a list that prints as gigabytes stops here."""
        if type(value) not in _SCALARS:
            _within(_text(value), "printing a value", builds=0)
        return value

    @staticmethod
    def concat(pieces: Iterable[str]) -> str:  # a macro's, a `{% set %}` block's, a `{% filter %}` block's text
        pieces = list(pieces)
        _within(sum(len(piece) for piece in pieces), "a block")
        return _charged("".join(pieces))

    @staticmethod
    def bounded_str_join(pieces: Any) -> str:
        _within(sum(_text(piece) for piece in pieces), "`~`")
        return _charged(jinja2.runtime.str_join(pieces))

    @staticmethod
    def bounded_markup_join(pieces: Any) -> str:
        _within(6 * sum(_text(piece) for piece in pieces), "`~`")
        return _charged(jinja2.runtime.markup_join(pieces))

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        _checked(left)
        _checked(right)
        size = _binop_size(operator_, left, right)
        result = super().call_binop(context, operator_, left, right)
        if size is None:
            return _charged(result, left, right)
        _charged(result, left, right, shallow=True)  # a new list of the same items
        budget = _BUDGET.get()
        if budget is not None and size.items >= 64 and result is not left and result is not right:
            budget.remember(result, size)
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        return super().getitem(obj, _checked(argument))  # hashing a key

    @staticmethod
    def sliced(obj: Any, key: slice) -> Any:
        return _charged(obj[key], obj)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_numbers(args, kwargs)
        for value in (*args, *kwargs.values()):
            _checked(value)
        receiver = getattr(__obj, "__self__", None)
        if receiver is not None and isinstance(__obj, types.BuiltinMethodType | types.MethodType):
            _checked(receiver)  # `[a].count(b)` compares with every item
            args = _before_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(__obj, Macro):  # its text was charged by `concat`
            return result
        return _charged(result, receiver, *args, *kwargs.values())

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`"…".format` and `.format_map`, through `_BoundedFormatter`."""
        if (
            not isinstance(value, types.MethodType | types.BuiltinMethodType)
            or value.__name__ not in ("format", "format_map")
            or not isinstance(value.__self__, str)
        ):
            return None
        template: str = value.__self__
        formatter = (
            _BoundedEscapeFormatter(self, escape=template.escape)
            if isinstance(template, Markup)
            else _BoundedFormatter(self)
        )
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return _charged(type(template)(formatter.vformat(template, (), args[0])))
            return _charged(type(template)(formatter.vformat(template, args, kwargs)))

        return functools.update_wrapper(wrapper, value)


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
