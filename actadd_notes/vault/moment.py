"""moment.js date formatting and arithmetic, as Obsidian's Daily notes plugin uses them
(English locale, Obsidian's default): daily note names and template placeholders."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import datetime, timedelta

__all__ = ["moment_add", "moment_format"]


def moment_add(when: datetime, amount: int, unit: str) -> datetime:
    """moment's `add(amount, unit)`: `M` months, `m` minutes; months clamp to the month's end."""
    if unit in "yYqQM":
        months = amount * {"y": 12, "Y": 12, "q": 3, "Q": 3, "M": 1}[unit]
        year, month0 = divmod(when.month - 1 + months, 12)
        year += when.year
        day = min(when.day, calendar.monthrange(year, month0 + 1)[1])
        return when.replace(year=year, month=month0 + 1, day=day)
    unit_seconds = {"w": 604800, "W": 604800, "d": 86400, "D": 86400, "h": 3600, "H": 3600, "m": 60, "s": 1}
    if unit == "S":
        return when + timedelta(milliseconds=amount)
    return when + timedelta(seconds=amount * unit_seconds[unit])


_LONG_FORMATS = {
    "LTS": "h:mm:ss A",
    "LT": "h:mm A",
    "L": "MM/DD/YYYY",
    "LL": "MMMM D, YYYY",
    "LLL": "MMMM D, YYYY h:mm A",
    "LLLL": "dddd, MMMM D, YYYY h:mm A",
    "l": "M/D/YYYY",
    "ll": "MMM D, YYYY",
    "lll": "MMM D, YYYY h:mm A",
    "llll": "ddd, MMM D, YYYY h:mm A",
}
_LONG = re.compile(r"(\[[^\[]*\])|(\\)?(LTS|LT|LL?L?L?|l{1,4})")
# moment's own token regex, in its order: the first alternative that matches wins.
_TOKEN = re.compile(
    r"\[[^\[]*\]|\\?(?:[Hh]mm(?:ss)?|Mo|MM?M?M?|Do|DDDo|DD?D?D?|ddd?d?|do?|w[o|w]?|W[o|W]?|Qo?|N{1,5}"
    r"|YYYYYY|YYYYY|YYYY|YY|y{2,4}|yo?|gg(?:ggg?)?|GG(?:GGG?)?|e|E|a|A|hh?|HH?|kk?|mm?|ss?|S{1,9}|x|X|zz?|ZZ?|.)",
    re.DOTALL,
)
_MONTHS = [calendar.month_name[i] for i in range(1, 13)]
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def moment_format(when: datetime, fmt: str) -> str:
    """`when` formatted like moment.js's `format(fmt)` in English: `[text]` is literal, `\\X`
    escapes X, and characters that are no token stay as they are."""
    for _ in range(5):  # long formats may nest, as in moment
        expanded = _LONG.sub(lambda m: m.group(0) if m.group(1) or m.group(2) else _LONG_FORMATS[m.group(3)], fmt)
        if expanded == fmt:
            break
        fmt = expanded
    out = []
    for token in _TOKEN.findall(fmt):
        if token.startswith("[") and token.endswith("]") and len(token) > 1:
            out.append(token[1:-1])
        elif token in _FORMATTERS:
            out.append(_FORMATTERS[token](when))
        else:
            out.append(token.replace("\\", ""))
    return "".join(out)


def _ordinal(number: int) -> str:
    suffix = "th" if 11 <= number % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _locale_week(when: datetime) -> tuple[int, int]:
    """(week-year, week) in moment's English locale: weeks start on Sunday, week 1 holds 1 January."""
    saturday = when.date() + timedelta(days=6 - (when.isoweekday() % 7))
    return saturday.year, (saturday.timetuple().tm_yday - 1) // 7 + 1


def _offset(when: datetime, colon: bool) -> str:
    offset = (when if when.tzinfo else when.astimezone()).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    return f"{sign}{minutes // 60:02d}{':' if colon else ''}{minutes % 60:02d}"


def _year(when: datetime, width: int) -> str:
    return f"{when.year:0{width}d}"


def _hour12(when: datetime) -> int:
    return when.hour % 12 or 12


def _fraction(digits: int) -> Callable[[datetime], str]:
    """The `S`…`SSSSSSSSS` tokens: the first `digits` digits of the fraction of a second."""
    return lambda when: f"{when.microsecond:06d}000"[:digits]


_FORMATTERS: dict[str, Callable[[datetime], str]] = {
    "M": lambda w: str(w.month),
    "Mo": lambda w: _ordinal(w.month),
    "MM": lambda w: f"{w.month:02d}",
    "MMM": lambda w: _MONTHS[w.month - 1][:3],
    "MMMM": lambda w: _MONTHS[w.month - 1],
    "Q": lambda w: str((w.month - 1) // 3 + 1),
    "Qo": lambda w: _ordinal((w.month - 1) // 3 + 1),
    "D": lambda w: str(w.day),
    "Do": lambda w: _ordinal(w.day),
    "DD": lambda w: f"{w.day:02d}",
    "DDD": lambda w: str(w.timetuple().tm_yday),
    "DDDo": lambda w: _ordinal(w.timetuple().tm_yday),
    "DDDD": lambda w: f"{w.timetuple().tm_yday:03d}",
    "d": lambda w: str(w.isoweekday() % 7),
    "do": lambda w: _ordinal(w.isoweekday() % 7),
    "dd": lambda w: _DAYS[w.isoweekday() % 7][:2],
    "ddd": lambda w: _DAYS[w.isoweekday() % 7][:3],
    "dddd": lambda w: _DAYS[w.isoweekday() % 7],
    "e": lambda w: str(w.isoweekday() % 7),
    "E": lambda w: str(w.isoweekday()),
    "w": lambda w: str(_locale_week(w)[1]),
    "wo": lambda w: _ordinal(_locale_week(w)[1]),
    "ww": lambda w: f"{_locale_week(w)[1]:02d}",
    "W": lambda w: str(w.isocalendar()[1]),
    "Wo": lambda w: _ordinal(w.isocalendar()[1]),
    "WW": lambda w: f"{w.isocalendar()[1]:02d}",
    "gg": lambda w: f"{_locale_week(w)[0] % 100:02d}",
    "gggg": lambda w: f"{_locale_week(w)[0]:04d}",
    "ggggg": lambda w: f"{_locale_week(w)[0]:05d}",
    "GG": lambda w: f"{w.isocalendar()[0] % 100:02d}",
    "GGGG": lambda w: f"{w.isocalendar()[0]:04d}",
    "GGGGG": lambda w: f"{w.isocalendar()[0]:05d}",
    "Y": lambda w: _year(w, 4),
    "YY": lambda w: f"{w.year % 100:02d}",
    "YYYY": lambda w: _year(w, 4),
    "YYYYY": lambda w: _year(w, 5),
    "YYYYYY": lambda w: "+" + _year(w, 6),
    "A": lambda w: "AM" if w.hour < 12 else "PM",
    "a": lambda w: "am" if w.hour < 12 else "pm",
    "H": lambda w: str(w.hour),
    "HH": lambda w: f"{w.hour:02d}",
    "h": lambda w: str(_hour12(w)),
    "hh": lambda w: f"{_hour12(w):02d}",
    "k": lambda w: str(w.hour or 24),
    "kk": lambda w: f"{w.hour or 24:02d}",
    "Hmm": lambda w: f"{w.hour}{w.minute:02d}",
    "Hmmss": lambda w: f"{w.hour}{w.minute:02d}{w.second:02d}",
    "hmm": lambda w: f"{_hour12(w)}{w.minute:02d}",
    "hmmss": lambda w: f"{_hour12(w)}{w.minute:02d}{w.second:02d}",
    "m": lambda w: str(w.minute),
    "mm": lambda w: f"{w.minute:02d}",
    "s": lambda w: str(w.second),
    "ss": lambda w: f"{w.second:02d}",
    **{"S" * n: _fraction(n) for n in range(1, 10)},
    "X": lambda w: str(int(w.timestamp())),
    "x": lambda w: str(int(w.timestamp() * 1000)),
    "Z": lambda w: _offset(w, colon=True),
    "ZZ": lambda w: _offset(w, colon=False),
    "z": lambda w: "",  # a zone abbreviation needs moment-timezone; plain moment writes nothing
    "zz": lambda w: "",
    **dict.fromkeys(("N", "NN", "NNN", "NNNNN"), lambda w: "AD"),
    "NNNN": lambda w: "Anno Domini",
    **dict.fromkeys(("y", "yy", "yyy", "yyyy"), lambda w: str(w.year)),
    "yo": lambda w: _ordinal(w.year),
}
