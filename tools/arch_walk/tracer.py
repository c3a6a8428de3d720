"""Run one gpt4batch process under a profiler that records, for docs/architecture.md's walks:

- which of the project's modules run code, per millisecond (`touched`: module -> ms buckets),
  so the driver can count the modules touched inside any time window;
- which modules run code *on the record's behalf*: while a frame up the stack (awaiting
  coroutines included) holds the record in a local (`behalf`: module -> ms buckets);
- which modules *hold the record*: a function of the module received the record's data as an
  argument, or returned (or yielded) it (`holders`). The record is recognised by a marker
  string in its ask text, searched in str/bytes and, a few levels deep, in containers, pydantic
  models and plain objects (never in `self`/`cls`, never in closures);
- each flow of the record between modules: from the caller's module to a holder (argument),
  from a holder to its caller's module (return value), from a project function to a
  function outside the project (a library, e.g. pynsq, httpx, json), and a write in C
  (`write`, `writelines`…) made by a project function holding the record in a local.

    python tools/arch_walk/tracer.py OUT.json MARKER -m gpt4batch.cli run ...
    python tools/arch_walk/tracer.py OUT.json MARKER -m gpt4batch.services.caller ...

The trace is written every second and at exit. Tracing starts before the module is imported,
so start-up is recorded too; the driver (walk.py) chooses the window it counts.
Works on any checkout: modules are named by their path under the tree (`common/bus.py`),
whether the file is reached as <tree>/common/bus.py (setuptools' import hook, before the
redesign) or <tree>/src/gpt4batch/common/bus.py (the static src layout on main).
"""

from __future__ import annotations

import atexit
import dis
import json
import os
import runpy
import sys
import threading
import time
from typing import Any

_TOPS = ("common", "services", "cli")
_SKIP_ARGS = frozenset({"self", "cls"})
_LIMIT = 64  # items looked at per container
_DEPTH = 7  # a group handler's list -> (message, delivery) -> model -> record -> asks -> ask
_WRITES = frozenset({"write", "writelines", "pwrite", "writev"})


def module_of(filename: str, cache: dict[str, str | None]) -> str | None:
    """`common/bus.py` for a file of the project's three packages, else None."""
    found = cache.get(filename, "")
    if found != "":
        return found
    name: str | None = None
    parts = filename.replace("\\", "/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in _TOPS and parts[-1].endswith(".py"):
            rest = "/".join(parts[i:])
            if "site-packages" not in filename and "/tests/" not in filename:
                name = rest
            break
    # the simulator stands in for the upstream: it is not part of the walk
    if name is not None and name.startswith("services/mock_upstream/"):
        name = None
    cache[filename] = name
    return name


class Tracer:
    def __init__(self, out: str, marker: str) -> None:
        self.out = out
        self.marker = marker
        self.marker_b = marker.encode()
        self.cache: dict[str, str | None] = {}
        self.touched: dict[str, set[int]] = {}
        # modules that ran while a frame up the stack held the record: ms buckets
        self.behalf: dict[str, set[int]] = {}
        self.resume_at: dict[Any, int] = {}  # code -> offset of its first RESUME
        self.holding: set[int] = set()  # ids of running frames holding the record in a local
        # (module, function, kind, other module) -> [first t, last t, count]
        self.flows: dict[tuple[str, str, str, str], list[float]] = {}
        self.lock = threading.Lock()

    # -- the marker search -------------------------------------------------------------
    def has(self, obj: Any, depth: int = _DEPTH, budget: list[int] | None = None) -> bool:
        """Whether `obj` holds the marker, looking at no more than 3,000 objects."""
        budget = [3000] if budget is None else budget
        budget[0] -= 1
        if budget[0] < 0:
            return False
        try:
            if isinstance(obj, str):
                return self.marker in obj
            if isinstance(obj, bytes | bytearray):
                return self.marker_b in obj
            if isinstance(obj, memoryview):
                return self.marker_b in obj.tobytes()
            if depth == 0 or obj is None or isinstance(obj, int | float | bool | type):
                return False
            if callable(obj) and not hasattr(obj, "__dict__"):
                return False
            if isinstance(obj, dict):
                for n, (k, v) in enumerate(obj.items()):
                    if n >= _LIMIT:
                        break
                    if (isinstance(k, str) and self.marker in k) or self.has(v, depth - 1, budget):
                        return True
                return False
            if isinstance(obj, list | tuple | set | frozenset):
                for n, v in enumerate(obj):
                    if n >= _LIMIT:
                        break
                    if self.has(v, depth - 1, budget):
                        return True
                return False
            if type(obj).__module__ in ("builtins", "types"):
                return False
            d = getattr(obj, "__dict__", None)
            if isinstance(d, dict) and self.has(d, depth - 1, budget):
                return True
            extra = getattr(obj, "__pydantic_extra__", None)
            if isinstance(extra, dict) and self.has(extra, depth - 1, budget):
                return True
            for slot in getattr(type(obj), "__slots__", ()) or ():
                if isinstance(slot, str) and self.has(getattr(obj, slot, None), depth - 1, budget):
                    return True
        except Exception:  # an object that refuses inspection holds nothing we can see
            return False
        return False

    def first_entry(self, frame: Any) -> bool:
        """Whether the call event starts the frame, not a generator's or coroutine's resumption
        (whose arguments may since have come to hold the record: a bus with it in its window)."""
        code = frame.f_code
        if not code.co_flags & 0x3A0:  # generator, coroutine, iterable coroutine, async generator
            return True
        start = self.resume_at.get(code)
        if start is None:
            start = min(
                (i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), default=0
            )
            self.resume_at[code] = start
        return bool(frame.f_lasti <= start)

    def args_have(self, frame: Any) -> bool:
        if not self.first_entry(frame):
            return False
        code = frame.f_code
        n = code.co_argcount + code.co_kwonlyargcount
        n += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
        names = [v for v in code.co_varnames[:n] if v not in _SKIP_ARGS]
        if not names:
            return False
        local = frame.f_locals
        return any(self.has(local.get(v)) for v in names)

    def locals_have(self, frame: Any) -> bool:
        local = frame.f_locals
        return any(self.has(v) for k, v in list(local.items()) if k not in _SKIP_ARGS)

    def on_behalf(self, frame: Any) -> bool:
        """Whether a frame up the stack (awaiting coroutines included) holds the record."""
        holding = self.holding
        f = frame
        for _ in range(60):
            if f is None:
                return False
            if id(f) in holding:
                return True
            f = f.f_back
        return False

    def outer_module(self, frame: Any) -> str:
        """The nearest project module up the stack from `frame` (exclusive), else `outside`."""
        f = frame.f_back
        for _ in range(40):
            if f is None:
                return "outside"
            m = self.module(f)
            if m is not None:
                return m
            f = f.f_back
        return "outside"

    def flow(self, module: str, func: str, kind: str, other: str) -> None:
        now = time.time()
        key = (module, func, kind, other)
        with self.lock:
            seen = self.flows.get(key)
            if seen is None:
                self.flows[key] = [now, now, 1]
            else:
                seen[1] = now
                seen[2] += 1

    # -- the profile function ----------------------------------------------------------
    def module(self, frame: Any) -> str | None:
        """The frame's project module; code made at run time (a dataclass's `__init__`, whose
        file is `<string>`) belongs to the module whose globals it runs in."""
        filename = frame.f_code.co_filename
        if filename.startswith("<"):
            filename = frame.f_globals.get("__file__") or filename
        return module_of(filename, self.cache)

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "c_call":
            # a file or socket write in C: its arguments are not visible, so it counts when
            # the project function making it holds the record in any local
            if getattr(arg, "__name__", "") in _WRITES:
                module = self.module(frame)
                if module is not None and self.locals_have(frame):
                    self.flow(module, frame.f_code.co_qualname, "to-library", "(write)")
                    self.behalf.setdefault(module, set()).add(int(time.time() * 1000))
            return
        if event not in ("call", "return"):
            return
        module = self.module(frame)
        if module is None:
            if event == "call":  # a library function called by project code with the record
                back = frame.f_back
                caller = back and self.module(back)
                if caller and self.args_have(frame):
                    lib = frame.f_globals.get("__name__", "?")
                    self.flow(caller, back.f_code.co_qualname, "to-library", str(lib))
            return
        func = frame.f_code.co_qualname
        if event == "call":
            ms = int(time.time() * 1000)
            self.touched.setdefault(module, set()).add(ms)
            if self.locals_have(frame):
                self.holding.add(id(frame))
                self.behalf.setdefault(module, set()).add(ms)
            elif self.on_behalf(frame.f_back):
                self.behalf.setdefault(module, set()).add(ms)
            if self.args_have(frame):
                self.flow(module, func, "arg", self.outer_module(frame))
        else:
            self.holding.discard(id(frame))
            if arg is not None and self.has(arg):
                self.flow(module, func, "ret", self.outer_module(frame))
                back = frame.f_back  # the caller now holds the record: what it calls next is
                if back is not None:  # on the record's behalf too
                    self.holding.add(id(back))
                    caller = self.module(back)
                    if caller is not None:
                        self.behalf.setdefault(caller, set()).add(int(time.time() * 1000))

    # -- output ----------------------------------------------------------------------------
    def dump(self) -> None:
        with self.lock:
            data = {
                "pid": os.getpid(),
                "argv": sys.argv,
                "touched": {m: sorted(b) for m, b in list(self.touched.items())},
                "behalf": {m: sorted(b) for m, b in list(self.behalf.items())},
                "flows": [[*k, *v] for k, v in list(self.flows.items())],
            }
        tmp = f"{self.out}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.out)


def main() -> None:
    out, marker, dash_m, module, *args = sys.argv[1:]
    assert dash_m == "-m", "usage: tracer.py OUT MARKER -m MODULE ARGS..."
    tracer = Tracer(os.path.abspath(out), marker)

    def every_second() -> None:
        while True:
            time.sleep(1)
            tracer.dump()

    threading.Thread(target=every_second, daemon=True).start()  # started untraced
    atexit.register(tracer.dump)
    sys.argv = [module, *args]
    threading.setprofile(tracer.profile)
    sys.setprofile(tracer.profile)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
