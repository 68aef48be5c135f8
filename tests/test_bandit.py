"""bandit over the project's Python: no finding of medium or high severity, unless
the line says why it is safe with a ``# nosec`` comment that gives a reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BANDIT = Path(sys.executable).parent / "bandit"
EXCLUDE = [".venv", ".venv-bench", ".tools", "bench/express", "tests", "data", ".git"]
# "# nosec B608  # why this is safe": the reason in a comment of its own after the test ids
# (bandit reads every word up to the next "#" as a test id), three words at least.
NOSEC_WITH_REASON = re.compile(r"#\s*nosec(?:\s+B\d{3}(?:\s*,\s*B\d{3})*)?\s*#\s*\S+(?:\s+\S+){2,}")


def python_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not any(rel == e or rel.startswith(e + "/") for e in EXCLUDE):
            files.append(path)
    return files


def run_bandit(*extra: str) -> dict:
    files = [str(p) for p in python_files()]
    result = subprocess.run([str(BANDIT), "--format", "json", "--quiet", *extra, *files],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: findings, which are judged below
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    return report


def test_the_project_modules_are_scanned():
    names = {p.relative_to(ROOT).as_posix() for p in python_files()}
    assert {"userprofile_service.py", "store.py", "sqlitestore.py", "loaddata.py", "metrics.py"} <= names


def test_no_medium_or_high_finding():
    findings = [r for r in run_bandit()["results"] if r["issue_severity"] in ("MEDIUM", "HIGH")]
    assert not findings, "\n".join(
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_severity']}: {r['issue_text']}"
        for r in findings)


def test_every_nosec_gives_its_reason():
    """What a ``# nosec`` hides must be explained on its line: bandit run with
    ``--ignore-nosec`` shows each, and its line must carry a reason."""
    unexplained = []
    for r in run_bandit("--ignore-nosec")["results"]:
        if r["issue_severity"] not in ("MEDIUM", "HIGH"):
            continue
        line = Path(r["filename"]).read_text().splitlines()[r["line_number"] - 1]
        if "nosec" in line and not NOSEC_WITH_REASON.search(line):
            unexplained.append(f"{r['filename']}:{r['line_number']} {r['test_id']}: {line.strip()}")
    assert not unexplained, "a # nosec without a reason:\n" + "\n".join(unexplained)
