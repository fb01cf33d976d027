"""ARM template expressions, evaluated as Resource Manager does: `[func(args).prop[0]]`.

The functions are those cloudhpc's templates use (and a few common ones); an unknown
function is an error, as it is in Azure (InvalidTemplate). `uniqueString` and `guid` are
deterministic like Azure's but not Azure's own hash: a name made from them differs from the
name the real deployment would get."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FUNCTIONS_REF = ("https://learn.microsoft.com/azure/azure-resource-manager/templates/"
                 "template-functions")


class ExpressionError(ValueError):
    """InvalidTemplate: an expression Resource Manager would refuse."""


@dataclass
class Context:
    subscription: str
    resource_group: str
    location: str
    parameters: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    # reference(id): the deployed resource's state (properties), or raises ExpressionError
    reference: Callable[[str], dict[str, Any]] | None = None
    # variables are evaluated lazily (they may use parameters and other variables)
    _evaluated: dict[str, Any] = field(default_factory=dict)

    @property
    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"


def _unique(*parts: str) -> str:
    """13 lowercase characters from the arguments, as uniqueString gives."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


def _guid(*parts: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256("\x00".join(parts).encode()).digest()[:16]))


class _Parser:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def _ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\n":
            self.i += 1

    def _peek(self) -> str:
        self._ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def _expect(self, ch: str) -> None:
        if self._peek() != ch:
            raise ExpressionError(f"expected {ch!r} at position {self.i} of {self.s!r}")
        self.i += 1

    def parse(self) -> tuple[Any, ...]:
        node = self._expr()
        if self._peek():
            raise ExpressionError(f"unexpected {self.s[self.i:]!r} in {self.s!r}")
        return node

    def _expr(self) -> tuple[Any, ...]:
        node = self._primary()
        while True:
            ch = self._peek()
            if ch == ".":
                self.i += 1
                node = ("prop", node, self._ident())
            elif ch == "[":
                self.i += 1
                index = self._expr()
                self._expect("]")
                node = ("index", node, index)
            else:
                return node

    def _ident(self) -> str:
        self._ws()
        start = self.i
        while self.i < len(self.s) and (self.s[self.i].isalnum() or self.s[self.i] == "_"):
            self.i += 1
        if start == self.i:
            raise ExpressionError(f"expected a name at position {start} of {self.s!r}")
        return self.s[start:self.i]

    def _primary(self) -> tuple[Any, ...]:
        ch = self._peek()
        if ch == "'":
            self.i += 1
            out = []
            while True:
                if self.i >= len(self.s):
                    raise ExpressionError(f"unterminated string in {self.s!r}")
                if self.s[self.i] == "'":
                    if self.s[self.i + 1:self.i + 2] == "'":
                        out.append("'")
                        self.i += 2
                        continue
                    self.i += 1
                    return ("lit", "".join(out))
                out.append(self.s[self.i])
                self.i += 1
        if ch.isdigit() or ch == "-":
            start = self.i
            self.i += 1
            while self.i < len(self.s) and self.s[self.i].isdigit():
                self.i += 1
            return ("lit", int(self.s[start:self.i]))
        name = self._ident()
        self._expect("(")
        args = []
        if self._peek() != ")":
            while True:
                args.append(self._expr())
                if self._peek() == ",":
                    self.i += 1
                    continue
                break
        self._expect(")")
        return ("call", name, args)


def _resource_id(prefix: str, args: list[Any]) -> str:
    if len(args) < 2:
        raise ExpressionError("resourceId needs a type and a name")
    rtype, names = str(args[0]), [str(a) for a in args[1:]]
    parts = rtype.split("/")
    if len(parts) - 1 != len(names):
        raise ExpressionError(f"resourceId('{rtype}', ...) needs {len(parts) - 1} name(s), "
                              f"got {len(names)}")
    path = parts[0] + "".join(f"/{t}/{n}" for t, n in zip(parts[1:], names, strict=True))
    return f"{prefix}/providers/{path}"


class Evaluator:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def value(self, node: Any) -> Any:
        """Evaluate every expression inside a template value (strings, lists, objects)."""
        if isinstance(node, str):
            return self.string(node)
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if isinstance(node, dict):  # property names may be expressions too (identities)
            return {str(self.string(k)): self.value(v) for k, v in node.items()}
        return node

    def string(self, text: str) -> Any:
        if text.startswith("[[") or not (text.startswith("[") and text.endswith("]")):
            return text[1:] if text.startswith("[[") else text
        return self._eval(_Parser(text[1:-1]).parse())

    def _variable(self, name: str) -> Any:
        if name not in self.ctx._evaluated:
            if name not in self.ctx.variables:
                raise ExpressionError(f"the template variable '{name}' is not found")
            self.ctx._evaluated[name] = self.value(self.ctx.variables[name])
        return self.ctx._evaluated[name]

    def _eval(self, node: tuple[Any, ...]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "prop":
            base = self._eval(node[1])
            if not isinstance(base, dict) or node[2] not in base:
                raise ExpressionError(f"the language expression property '{node[2]}' "
                                      "doesn't exist")
            return base[node[2]]
        if kind == "index":
            base, index = self._eval(node[1]), self._eval(node[2])
            try:
                return base[index]
            except (IndexError, KeyError, TypeError):
                raise ExpressionError(f"index {index!r} is out of range") from None
        name, args = node[1].lower(), [self._eval(a) for a in node[2]]
        return self._call(name, args)

    def _call(self, name: str, args: list[Any]) -> Any:  # noqa: C901 - one table of functions
        ctx = self.ctx
        if name == "parameters":
            if args[0] not in ctx.parameters:
                raise ExpressionError(f"the template parameter '{args[0]}' is not found")
            return ctx.parameters[args[0]]
        if name == "variables":
            return self._variable(str(args[0]))
        if name == "concat":
            if args and isinstance(args[0], list):
                return [x for a in args for x in a]
            return "".join(str(a) for a in args)
        if name == "base64":
            return base64.b64encode(str(args[0]).encode()).decode()
        if name == "base64tostring":
            return base64.b64decode(str(args[0])).decode()
        if name == "resourceid":
            return _resource_id(ctx.group_id, args)
        if name == "subscriptionresourceid":
            return _resource_id(f"/subscriptions/{ctx.subscription}", args)
        if name == "resourcegroup":
            return {"id": ctx.group_id, "name": ctx.resource_group, "location": ctx.location}
        if name == "subscription":
            return {"id": f"/subscriptions/{ctx.subscription}",
                    "subscriptionId": ctx.subscription}
        if name == "uniquestring":
            return _unique(*map(str, args))
        if name == "guid":
            return _guid(*map(str, args))
        if name == "reference":
            if ctx.reference is None:
                raise ExpressionError("reference() cannot be used here")
            return ctx.reference(str(args[0]))
        if name == "tolower":
            return str(args[0]).lower()
        if name == "toupper":
            return str(args[0]).upper()
        if name == "string":
            return str(args[0])
        if name == "int":
            return int(args[0])
        if name == "length":
            return len(args[0])
        if name == "format":
            return str(args[0]).format(*args[1:])
        if name == "if":
            return args[1] if args[0] else args[2]
        if name == "equals":
            return args[0] == args[1]
        if name == "not":
            return not args[0]
        if name == "empty":
            return not args[0]
        if name in ("true", "false"):
            return name == "true"
        raise ExpressionError(f"the template function '{name}' is not valid "
                              f"({FUNCTIONS_REF})")
