"""Recording stand-ins for TensorRT's native objects, checked against the REAL bindings.

What is real: the ``tensorrt_bindings`` pybind module of a given TensorRT version (its
classes, enums, method/property tables and pybind signatures) and ``trt.Logger``.
What is stood in: every object that only NVIDIA's native libraries can create
(``Builder``, ``OnnxParser``, ``Runtime`` and everything they hand out). A stand-in knows
the real class it stands for; every attribute the code under test touches must exist on
that real class, and every call must match one of the real pybind overloads (argument
count, keywords, argument types from the signature); a call that would raise
``AttributeError`` or pybind's ``TypeError`` on the real object raises the same here.
Return values follow the real signature's return type (a stand-in of the returned class,
True for bool, 0 for int) unless an ``answers`` entry ("Class.method") says otherwise, so
a test can make TensorRT report failure (False, None, -1, a wrong dtype).
"""
from __future__ import annotations

import inspect
import re

_SIG = re.compile(r"^(?:\d+\.\s+)?(\w+)\((.*)\)\s*->\s*(.+)$")
# Classes whose constructors need libnvinfer; the rest of the module stays real.
NATIVE_FACTORIES = ("Builder", "OnnxParser", "Runtime")


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def signatures(doc: str, name: str) -> list[tuple[list[tuple[str, str, bool]], str]]:
    """[(params [(name, type, has_default)], return type)] from a pybind docstring,
    without ``self``; one entry per overload."""
    out = []
    for line in (doc or "").splitlines():
        m = _SIG.match(line.strip())
        if not m or m.group(1) != name or m.group(2).startswith("*args"):
            continue
        params = []
        for part in _split_top(m.group(2)):
            head, _, default = part.partition(" = ")
            pname, _, ptype = head.partition(": ")
            params.append((pname.strip(), ptype.strip(), bool(default)))
        if params and params[0][0] in ("self", "arg0"):
            params = params[1:]
        out.append((params, m.group(3).strip()))
    return out


def _short(type_name: str) -> str:
    return type_name.split("::")[-1].split(".")[-1]


class StandInModule:
    """The real module, with the native factories replaced by stand-in classes."""

    def __init__(self, real, answers: dict | None = None) -> None:
        self.real = real
        self.answers = dict(answers or {})
        self.calls: list[dict] = []
        self.unchecked: set[str] = set()

    def __getattr__(self, name):
        value = getattr(self.real, name)  # AttributeError exactly where the real one has none
        if name in NATIVE_FACTORIES:
            return _StandInClass(self, value)
        return value

    # -- type checks against the real signature -------------------------------------
    def type_ok(self, type_name: str, value) -> bool:
        short = _short(type_name)
        if type_name in ("int", "typing.SupportsInt"):
            return not isinstance(value, bool) and (isinstance(value, int)
                                                    or hasattr(type(value), "__index__"))
        if type_name in ("float", "typing.SupportsFloat"):
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if type_name == "str":
            return isinstance(value, str)
        if type_name == "bool":
            return isinstance(value, bool)
        if type_name in ("tuple", "list"):
            return type(value).__name__ == type_name
        if short in ("Buffer", "buffer"):
            return isinstance(value, (bytes, bytearray, memoryview))
        if short == "Dims":
            if isinstance(value, (tuple, list)):  # pybind converts these implicitly
                return all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            return isinstance(value, self.real.Dims)
        cls = getattr(self.real, short, None)
        if inspect.isclass(cls):
            if isinstance(value, _StandIn):
                return issubclass(value.real_cls, cls)
            return isinstance(value, cls)
        self.unchecked.add(type_name)  # a type this checker does not know: accepted, reported
        return True

    def value_of(self, type_name: str, key: str, args: tuple):
        if key in self.answers:
            answer = self.answers[key]
            return answer(*args) if callable(answer) else answer
        short = _short(type_name)
        if type_name == "None":
            return None
        if type_name == "bool":
            return True
        if type_name in ("int", "typing.SupportsInt"):
            return 0
        if type_name == "str":
            return ""
        if re.fullmatch(r"(?:typing\.)?[Ll]ist\[str\]", type_name):
            return []
        cls = getattr(self.real, short, None)
        if inspect.isclass(cls):
            return _StandIn(self, cls)
        return _Opaque(type_name)

    def call(self, owner_cls, name: str, func, args: tuple, kwargs: dict):
        sigs = signatures(getattr(func, "__doc__", ""), name)
        key = f"{owner_cls.__name__}.{name}"
        if not sigs:
            raise AssertionError(f"{key}: no pybind signature found in the real docstring")
        for params, ret in sigs:
            if self._binds(params, args, kwargs):
                self.calls.append({"call": key, "args": [_show(a) for a in args],
                                   "kwargs": {k: _show(v) for k, v in kwargs.items()}})
                return self.value_of(ret, key, args)
        raise TypeError(f"{key}(): incompatible function arguments {[_show(a) for a in args]} "
                        f"{kwargs}; the real overloads are {[p for p, _ in sigs]}")

    def _binds(self, params, args, kwargs) -> bool:
        if len(args) > len(params):
            return False
        for (pname, ptype, _), value in zip(params, args):
            if not self.type_ok(ptype, value):
                return False
        rest = params[len(args):]
        names = {p[0] for p in rest}
        if set(kwargs) - names:
            return False
        for pname, ptype, has_default in rest:
            if pname in kwargs:
                if not self.type_ok(ptype, kwargs[pname]):
                    return False
            elif not has_default:
                return False
        return True


class _StandInClass:
    def __init__(self, module: StandInModule, real_cls) -> None:
        self.module, self.real_cls = module, real_cls

    def __call__(self, *args, **kwargs):
        self.module.call(self.real_cls, "__init__", self.real_cls.__init__, args, kwargs)
        return _StandIn(self.module, self.real_cls)

    def __getattr__(self, name):
        return getattr(self.real_cls, name)


class _StandIn:
    def __init__(self, module: StandInModule, real_cls) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "real_cls", real_cls)

    def __getattr__(self, name):
        cls = self.real_cls
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"'{cls.__module__}.{cls.__name__}' object has no attribute "
                                 f"'{name}' (checked against the real class)") from None
        module = self._module
        key = f"{cls.__name__}.{name}"
        if isinstance(attr, property):
            doc = (attr.fget.__doc__ or "").splitlines()[0] if attr.fget else ""
            ret = doc.rpartition("->")[2].strip() or "None"
            module.calls.append({"get": key})
            return module.value_of(ret, key, ())
        func = getattr(cls, name)
        return lambda *args, **kwargs: module.call(cls, name, func, args, kwargs)

    def __setattr__(self, name, value):
        attr = inspect.getattr_static(self.real_cls, name)
        if not (isinstance(attr, property) and attr.fset is not None):
            raise AttributeError(f"{self.real_cls.__name__}.{name} is not settable")
        self._module.calls.append({"set": f"{self.real_cls.__name__}.{name}", "value": _show(value)})

    def __bytes__(self):
        # IHostMemory exposes the buffer protocol; its stand-in gives placeholder bytes.
        if self.real_cls.__name__ != "IHostMemory":
            raise TypeError(f"cannot convert {self.real_cls.__name__} to bytes")
        return b"stand-in serialized engine"

    def __repr__(self):
        return f"<stand-in {self.real_cls.__name__}>"


class _Opaque:
    """A return type the bindings do not expose as a class (e.g. nvonnxparser::IParserError)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __str__(self):
        return f"<{self.type_name}>"


def _show(value):
    if isinstance(value, (_StandIn, _Opaque)):
        return repr(value) if isinstance(value, _StandIn) else str(value)
    if isinstance(value, (int, float, str, bool, type(None))) and type(value) in (int, float, str, bool, type(None)):
        return value
    if isinstance(value, (tuple, list)):
        return [_show(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)
