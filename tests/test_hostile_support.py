"""Support for the hostile-file tests: run a loader in a forked child process and report how it
ended (a result, an exception, or a crash such as SIGSEGV) and how much memory it took.

A crash in the child fails the test that asked for it instead of killing pytest. Memory is the
child's peak resident set (``VmHWM``) minus its resident set when it started: what the load
itself touched. (A child that crashes reports the kernel's ``wait4`` peak instead.) This module holds no tests of its own apart from a check of
the helper.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import time
import zipfile
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

#: Memory a load of a small hostile file may add (MB): generous against legitimate overheads,
#: far below the gigabytes the old loaders allocated.
MEMORY_BOUND_MB = 200


@dataclass
class Outcome:
    kind: str  # "ok" | "error" | "crash" | "timeout"
    error_type: str = ""
    message: str = ""
    value: object = None
    extra_mb: float = 0.0
    signal: int = 0


def zip_members(blob: bytes) -> dict[str, bytes]:
    """The members of a zip archive (a saved graph or checkpoint), name -> raw bytes."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def zip_of(members: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    """A zip archive of ``members`` in order, every member written with ``method``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return buf.getvalue()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def isolated(fn, *args, timeout: float = 60.0) -> Outcome:
    """Run ``fn(*args)`` in a forked child; its return value must be JSON-serialisable."""
    r, w = os.pipe()
    base = _status_kb("VmRSS")
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(r)
            import faulthandler

            faulthandler.disable()  # a crash is reported by the parent, not dumped here
            signal.alarm(int(timeout) + 1)
            child_base = _status_kb("VmRSS")
            try:
                result = {"kind": "ok", "value": fn(*args)}
            except BaseException as exc:  # noqa: BLE001 - report every way the loader ended
                result = {"kind": "error", "type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                          "message": str(exc)[:20000]}
            result["extra_kb"] = _status_kb("VmHWM") - child_base
            payload = json.dumps(result, default=str).encode()
            with os.fdopen(w, "wb") as fh:
                fh.write(payload)
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout + 5
    with os.fdopen(r, "rb") as fh:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fh], [], [], 0.5)
            if ready:
                chunk = os.read(fh.fileno(), 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    extra_mb = max(0.0, (usage.ru_maxrss - base) / 1024)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        kind = "timeout" if sig in (signal.SIGALRM, signal.SIGKILL) else "crash"
        return Outcome(kind, signal=sig, extra_mb=extra_mb)
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        return Outcome("crash", message="child wrote no result", extra_mb=extra_mb)
    extra_mb = max(0.0, result["extra_kb"] / 1024)
    if result["kind"] == "ok":
        return Outcome("ok", value=result["value"], extra_mb=extra_mb)
    return Outcome("error", result["type"], result["message"], extra_mb=extra_mb,
                   value=result["mro"])


class Tally:
    """Counts of outcomes per attack class (printed with ``-s``; the report's table)."""

    counts: dict[str, Counter] = {}

    @classmethod
    def add(cls, attack: str, outcome: str) -> None:
        cls.counts.setdefault(attack, Counter())[outcome] += 1
        path = os.environ.get("N2NGRAPH_HOSTILE_TALLY")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps([attack, outcome]) + "\n")


def check_outcome(out: Outcome, attack: str, path, *, error_types=("FileFormatError",),
                  ok=None, bound_mb: float = MEMORY_BOUND_MB) -> None:
    """The loader either refused the file with one line naming it (an exception whose class is
    or derives from one of ``error_types``) or loaded it and ``ok(value)`` holds; it never
    crashed, hung or took more than ``bound_mb`` of memory."""
    if out.kind == "error" and any(t in (out.value or []) for t in error_types):
        label = "clear error"
    elif out.kind == "ok" and ok is not None and ok(out.value):
        label = "correct load"
    else:
        label = f"other ({out.kind} {out.error_type} {out.signal or ''})".strip()
    Tally.add(attack, label)
    assert out.kind not in ("crash", "timeout"), f"{attack}: the loader died ({out.kind}, signal {out.signal})"
    assert out.extra_mb < bound_mb, f"{attack}: the load took {out.extra_mb:.0f} MB (bound {bound_mb} MB)"
    if out.kind == "error":
        assert label == "clear error", f"{attack}: {out.error_type}: {out.message[:500]}"
        assert "\n" not in out.message, f"{attack}: multi-line message {out.message[:300]!r}"
        assert str(path) in out.message, f"{attack}: the message does not name the file: {out.message[:300]}"
        low = out.message.lower()
        assert "weights_only=false" not in low and "allow_pickle=true" not in low, out.message
    else:
        assert label == "correct load", f"{attack}: loaded something wrong: {out.value!r}"[:500]


# --------------------------------------------------------------------------- the helper itself
def _allocate(mb: int) -> int:
    a = np.ones(mb << 20, dtype=np.uint8)
    return int(a.sum())


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def test_isolated_reports_results_errors_crashes_and_memory():
    out = isolated(_allocate, 300)
    assert out.kind == "ok" and out.value == 300 << 20 and 250 < out.extra_mb < 400
    small = isolated(_allocate, 1)
    assert small.kind == "ok" and small.extra_mb < 30
    err = isolated(int, "x")
    assert err.kind == "error" and err.error_type == "ValueError" and "ValueError" in err.value
    crash = isolated(_segfault)
    assert crash.kind == "crash" and crash.signal == signal.SIGSEGV
    with pytest.raises(AssertionError, match="died"):
        check_outcome(crash, "selftest", "x")
