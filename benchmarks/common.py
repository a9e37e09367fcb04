"""Helpers shared by the benchmark scripts: machine facts and writing a section of BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    """One line describing this machine."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def header(command: str) -> str:
    """The provenance lines every table carries."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return (
        f"- command: `{command}`\n- date: {dt.date.today().isoformat()}\n"
        f"- machine: {machine()}\n- git commit: {commit or 'unknown'}\n"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``## name`` of BENCHMARKS.md with ``body``."""
    text = BENCHMARKS.read_text() if BENCHMARKS.is_file() else "# Benchmarks\n"
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text)


def command_line() -> str:
    """How this script was invoked, as a module run from the repository root."""
    script = Path(sys.argv[0]).resolve()
    module = ".".join(script.relative_to(BENCHMARKS.parent).with_suffix("").parts)
    return " ".join(["python -m", module, *sys.argv[1:]])
