"""The subset of Jinja that lm-evaluation-harness task YAMLs use, without Jinja.

lm-eval renders ``doc_to_text``/``doc_to_choice``/``doc_to_target`` with Jinja
(``lm_eval.utils.apply_template``). Task files in the wild use a small part of it: ``{{field}}``,
dotted and indexed access (``{{choices.text}}``, ``{{endings[0]}}``), string methods
(``{{choices.label.index(answerKey)}}``, ``{{continuation.strip()}}``), list and string literals
(``{{[sol1, sol2]}}``), ``+``, comparisons, ``x if c else y`` and a few filters
(``|trim``, ``|lower``, ``|upper``, ``|capitalize``, ``|title``, ``|string``, ``|int``,
``|length``, ``|list``, ``|first``, ``|last``, ``|join(sep)``, ``|replace(a, b)``).

Each ``{{ ... }}`` is parsed with Python's ``ast`` (Jinja expressions are Python-like; ``a|f``
parses as a bit-or and is read as a filter) and evaluated over an allow-list, so a task file can
never run arbitrary code. Values render with ``str()`` as Jinja does (a list renders as its
Python repr, which lm-eval then reads back with ``ast.literal_eval``). ``{% ... %}`` blocks are
refused.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Mapping
from typing import Any

from ramp_edge.errors import ConfigError

logger = logging.getLogger(__name__)

_EXPR = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_METHODS = {
    "strip", "lstrip", "rstrip", "lower", "upper", "capitalize", "title", "replace", "split",
    "startswith", "endswith", "index", "count", "join", "format", "get", "keys", "values",
}  # fmt: skip
_FILTERS = {
    "trim": lambda v: str(v).strip(),
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "capitalize": lambda v: str(v).capitalize(),
    "title": lambda v: str(v).title(),
    "string": str,
    "int": lambda v: int(float(v)) if not isinstance(v, int) else v,
    "float": float,
    "length": len,
    "count": len,
    "list": list,
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "join": lambda v, sep="": str(sep).join(str(x) for x in v),
    "replace": lambda v, old, new: str(v).replace(old, new),
}
_LITERALS = {"true": True, "false": False, "none": None, "True": True, "False": False}
_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class TemplateError(ConfigError):
    """A template that cannot be parsed, or that asks for something the document lacks."""


def check_template(template: str) -> None:
    """Parse every ``{{ ... }}`` of `template` once, so a bad task file fails before scoring.

    Raises:
        TemplateError: a ``{% %}`` block or an expression outside the supported subset.
    """
    if "{%" in template:
        raise TemplateError("{% ... %} blocks are not supported; use {{ ... }} expressions")
    for match in _EXPR.finditer(template):
        _parse(match.group(1))


def render(template: str, doc: Mapping[str, Any]) -> str:
    """Render `template` over `doc` like ``jinja2.Template(template).render(**doc)``.

    Raises:
        TemplateError: unsupported syntax, or a field the document does not have.
    """
    if "{%" in template:
        raise TemplateError("{% ... %} blocks are not supported; use {{ ... }} expressions")
    parts: list[str] = []
    last = 0
    for match in _EXPR.finditer(template):
        parts.append(template[last : match.start()])
        value = _eval(_parse(match.group(1)), doc)
        parts.append("" if value is None else str(value))
        last = match.end()
    parts.append(template[last:])
    return "".join(parts)


def _parse(source: str) -> ast.expr:
    try:
        return ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        raise TemplateError(f"cannot parse template expression {{{{{source}}}}}") from None


def _eval(node: ast.expr, doc: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in doc:
            return doc[node.id]
        if node.id in _LITERALS:
            return _LITERALS[node.id]
        raise TemplateError(f"document has no field {node.id!r}; it has {sorted(doc)}")
    if isinstance(node, ast.Attribute):
        base = _eval(node.value, doc)
        if isinstance(base, Mapping):  # Jinja: a.b is a["b"] for dicts
            if node.attr in base:
                return base[node.attr]
            raise TemplateError(f"document has no field {node.attr!r} under {sorted(base)}")
        raise TemplateError(f"attribute {node.attr!r} is only allowed as a method call")
    if isinstance(node, ast.Subscript):
        base = _eval(node.value, doc)
        index = node.slice
        if isinstance(index, ast.Slice):
            bounds = [None if p is None else _eval(p, doc) for p in (index.lower, index.upper)]
            return base[bounds[0] : bounds[1]]
        try:
            return base[_eval(index, doc)]
        except (KeyError, IndexError, TypeError) as err:
            raise TemplateError(f"cannot index: {err}") from None
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, doc) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {
            _eval(k, doc): _eval(v, doc) for k, v in zip(node.keys, node.values, strict=True) if k
        }
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _filter(node.right, _eval(node.left, doc), doc)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
        left, right = _eval(node.left, doc), _eval(node.right, doc)
        if isinstance(node.op, ast.Add):
            return left + right
        return left - right if isinstance(node.op, ast.Sub) else left * right
    if isinstance(node, ast.Compare):
        left = _eval(node.left, doc)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, doc)
            if type(op) not in _COMPARE or not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, doc) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = (result and value) if isinstance(node.op, ast.And) else (result or value)
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        value = _eval(node.operand, doc)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, doc) else node.orelse, doc)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.keywords:
        if node.func.attr not in _METHODS:
            raise TemplateError(f"method {node.func.attr!r} is not allowed in templates")
        base = _eval(node.func.value, doc)
        args = [_eval(a, doc) for a in node.args]
        try:
            return getattr(base, node.func.attr)(*args)
        except (AttributeError, ValueError, TypeError, KeyError) as err:
            raise TemplateError(f"{node.func.attr}(): {err}") from None
    raise TemplateError(f"unsupported template expression {ast.unparse(node)!r}")


def _filter(node: ast.expr, value: Any, doc: Mapping[str, Any]) -> Any:
    args: list[Any] = []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_eval(a, doc) for a in node.args]
        node = node.func
    if not isinstance(node, ast.Name) or node.id not in _FILTERS:
        raise TemplateError(
            f"unsupported filter {ast.unparse(node)!r}; supported: {', '.join(sorted(_FILTERS))}"
        )
    try:
        return _FILTERS[node.id](value, *args)
    except (ValueError, TypeError, IndexError) as err:
        raise TemplateError(f"filter {node.id}: {err}") from None
