#!/usr/bin/env python3
"""bandit over the project's Python (tools/lint.sh runs this).

Fails on any finding of medium or high severity, unless its line carries a
``# nosec`` that says why it is safe: the reason in a comment of its own after
the test ids (bandit reads every word up to the next "#" as a test id), three
words at least. A ``# nosec`` without a reason fails whatever it hides.
Exit status 0 when clean, 1 on any finding; what was scanned is printed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from testkit import ROOT

BANDIT = Path(sys.executable).parent / "bandit"
TOP_EXCLUDED = {"tests", "data", ".tools", ".git"}  # tests: asserts and fixed test secrets are their job
MUST_SCAN = {path.name for path in ROOT.glob("*.py")}  # the service's modules: no exclusion may drop one
SEVERE = ("MEDIUM", "HIGH")
NOSEC_WITH_REASON = re.compile(r"#\s*nosec(?:\s+B\d{3}(?:\s*,\s*B\d{3})*)?\s*#\s*\S+(?:\s+\S+){2,}")


def excluded(rel: Path) -> bool:
    """Not ours to scan: the tests, local data and tools, virtual environments, npm packages."""
    dirs = rel.parts[:-1]
    return bool(dirs) and (dirs[0] in TOP_EXCLUDED or any(d == "node_modules" or d.startswith(".venv") for d in dirs))


def python_files() -> list[Path]:
    return [path for path in sorted(ROOT.rglob("*.py")) if not excluded(path.relative_to(ROOT))]


def bandit(files: list[Path], *extra: str) -> list[dict]:
    result = subprocess.run(
        [str(BANDIT), "--format", "json", "--quiet", *extra, *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode not in (0, 1):  # 1: findings, judged by the caller
        sys.exit(f"bandit failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    if report["errors"]:
        sys.exit(f"bandit could not scan: {report['errors']}")
    return report["results"]


def where(r: dict) -> str:
    return f"{Path(r['filename']).relative_to(ROOT)}:{r['line_number']} {r['test_id']} {r['issue_severity']}"


def main() -> int:
    files = python_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    problems = [f"not scanned: {name}" for name in sorted(MUST_SCAN - names)]
    problems += [f"{where(r)}: {r['issue_text']}" for r in bandit(files) if r["issue_severity"] in SEVERE]
    hidden = 0
    for r in bandit(files, "--ignore-nosec"):
        line = Path(r["filename"]).read_text().splitlines()[r["line_number"] - 1]
        if "nosec" in line:
            hidden += 1
            if not NOSEC_WITH_REASON.search(line):
                problems.append(f"{where(r)}: a # nosec without its reason: {line.strip()}")
    print(f"bandit: {len(files)} files scanned, {hidden} findings under a # nosec, {len(problems)} problems")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
