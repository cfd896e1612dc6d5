"""Config errors: :class:`ConfigError` and the pydantic-error -> one-line formatter.

Every problem in a job file is reported as one line naming the source, the dotted key, the bad
value and what is allowed, e.g.::

    jobs/x.yaml: campaigns[1].params.eps: -1 — must be >= 0
    jobs/x.yaml: dataset.name: 'glyph' — unknown; allowed: adult, colored_mnist, glyphs, parquet

Validators inside the models raise :class:`Invalid` (a ``ValueError`` pydantic wraps) to report
a problem at a location below the validated object, with the bad value and the allowed values.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A job file or override is invalid; the message (one line) names the source and the key."""


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()


class Invalid(ValueError):
    """A problem found by a validator: ``loc`` is relative to the object being validated
    (``("params", "eps")`` inside a campaign), ``value`` the bad value (:data:`NO_VALUE`: none
    shown), ``allowed`` the accepted values (listed after the reason)."""

    def __init__(self, why: str, *, loc: Sequence[str | int] = (), value: Any = NO_VALUE,
                 allowed: Iterable[Any] | None = None, more: int = 0) -> None:
        super().__init__(why)
        self.why = why
        self.loc = tuple(loc)
        self.value = value
        self.allowed = None if allowed is None else [str(a) for a in allowed]
        self.more = more  # further problems not shown

    def line(self) -> str:
        return line(self.loc, self.why, self.value, self.allowed, self.more)


def dotted(loc: Sequence[str | int]) -> str:
    """``("campaigns", 1, "params", "eps")`` -> ``"campaigns[1].params.eps"``."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else str(item)
    return out


def show(value: Any, limit: int = 80) -> str:
    """A short ``repr`` of a bad value (long values are cut)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def line(loc: Sequence[str | int], why: str, value: Any = NO_VALUE,
         allowed: Iterable[str] | None = None, more: int = 0) -> str:
    """``"<dotted key>: <value> — <why>; allowed: a, b"`` (parts left out when absent)."""
    key = dotted(loc)
    text = why if value is NO_VALUE else f"{show(value)} — {why}"
    if key:
        text = f"{key}: {text}"
    allowed = list(allowed) if allowed is not None else None
    if allowed is not None:
        text += f"; allowed: {', '.join(allowed) if allowed else '(none)'}"
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return text


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------------- pydantic errors


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` around a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: type[BaseModel]) -> set[Any]:
    """The single-value ``Literal`` fields of a union member (its discriminator tag)."""
    out = set()
    for f in model.model_fields.values():
        ann = _unwrap(f.annotation)
        if typing.get_origin(ann) is Literal and len(typing.get_args(ann)) == 1:
            out.add(typing.get_args(ann)[0])
    return out


def resolve(root: type[BaseModel] | None, loc: Sequence[str | int]
            ) -> tuple[tuple[str | int, ...], type[BaseModel] | None]:
    """Pydantic's ``loc`` as the job file's keys (union tags and union branch labels removed),
    and the model holding the last key (for the allowed keys of an unknown one)."""
    out: list[str | int] = []
    tp: Any = root
    holder = None
    for item in loc:
        tp = _unwrap(tp)
        holder = None
        if _is_model(tp):
            holder = tp
            out.append(item)
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            tp = field.annotation if field is not None else None
            continue
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [_unwrap(a) for a in typing.get_args(tp)]
            match = [m for m in members if _is_model(m) and item in _tags(m)]
            tp = match[0] if match else None
            continue  # a discriminated-union tag or a union branch label: not a key
        if origin in (list, tuple, Sequence) and isinstance(item, int):
            out.append(item)
            args = typing.get_args(tp)
            tp = args[0] if args else None
            continue
        if origin in (dict, Mapping):
            out.append(item)
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else None
            continue
        out.append(item)
        tp = None
    return tuple(out), holder


_TYPE_WORDS = {
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true/false", "bool_parsing": "must be true/false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping", "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping", "mapping_type": "must be a mapping",
    "list_type": "must be a list", "tuple_type": "must be a list",
    "finite_number": "must be a finite number",
    "missing": "required key is missing",
}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", str(text))


def describe(err: Mapping[str, Any], root: type[BaseModel] | None
             ) -> tuple[tuple[str | int, ...], Any, str, list[str] | None]:
    """One pydantic error as ``(loc, value, why, allowed)`` in the job file's terms."""
    loc, holder = resolve(root, err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input", NO_VALUE)
    allowed = None
    if kind == "extra_forbidden":
        why = "unknown key"
        allowed = sorted(holder.model_fields) if holder is not None else None
    elif kind == "missing":
        why, value = _TYPE_WORDS[kind], NO_VALUE
    elif kind == "literal_error":
        why, allowed = "unknown", sorted(_quoted(ctx.get("expected", ""))) or None
        if allowed is None:
            why = f"must be {ctx.get('expected', 'one of the allowed values')}"
    elif kind == "union_tag_invalid":
        field = (_quoted(ctx.get("discriminator", "")) or ["name"])[0]
        loc, value = (*loc, field), ctx.get("tag", value)
        why, allowed = "unknown", sorted(_quoted(ctx.get("expected_tags", "")))
    elif kind == "union_tag_not_found":
        field = (_quoted(ctx.get("discriminator", "")) or ["name"])[0]
        loc, value, why = (*loc, field), NO_VALUE, "required key is missing"
    elif kind in _BOUNDS:
        sign, key = _BOUNDS[kind]
        why = f"must be {sign} {_num(ctx.get(key))}"
    elif kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        why = f"must have {'at least' if kind == 'too_short' else 'at most'} {n} item(s)"
    elif kind in _TYPE_WORDS:
        why = _TYPE_WORDS[kind]
    elif kind in ("value_error", "assertion_error"):
        exc = ctx.get("error")
        if isinstance(exc, Invalid):
            loc = (*loc, *exc.loc)
            value = exc.value
            why, allowed = exc.why, exc.allowed
            if exc.more:
                why += f" (and {exc.more} more problem{'s' if exc.more > 1 else ''})"
        else:
            why = str(exc) if exc is not None else str(err.get("msg", ""))
    else:
        why = str(err.get("msg", kind))
    return loc, value, " ".join(why.split()), allowed


def first_problem(exc: ValidationError, root: type[BaseModel] | None,
                  prefix: Sequence[str | int] = ()) -> Invalid:
    """The first error of ``exc`` (an unknown key if any) as an :class:`Invalid` located at
    ``prefix + loc``, counting the others."""
    errors = exc.errors(include_url=False)
    if not errors:
        return Invalid(str(exc), loc=prefix)
    # an unknown key first: a misspelt key also shows up as a missing or defaulted one
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc, value, why, allowed = describe(first, root)
    return Invalid(why, loc=(*prefix, *loc), value=value, allowed=allowed,
                   more=len(errors) - 1)


def format_validation_error(exc: ValidationError, root: type[BaseModel] | None = None,
                            source: str | None = None) -> str:
    """One line for a pydantic ``ValidationError`` (the first problem, and how many more)."""
    text = first_problem(exc, root).line()
    return f"{source}: {text}" if source else text


def config_error(exc: ValidationError, root: type[BaseModel] | None, source: str) -> ConfigError:
    return ConfigError(format_validation_error(exc, root, source))


def one_line(text: str) -> str:
    """``text`` with its line breaks folded (for ``rayfal: error: ...``)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
