"""The Markdown documents say what is: what they name exists, and their figures are the results'."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import metrics
from testkit import ROOT

pytestmark = pytest.mark.inprocess

SKIPPED_DIRS = {"node_modules"}  # and every folder whose name starts with a dot (.venv, .tools, caches)
DOCS = sorted(
    p
    for p in ROOT.rglob("*.md")
    if not any(part.startswith(".") or part in SKIPPED_DIRS for part in p.relative_to(ROOT).parts[:-1])
)
# What the project's commands make, named in the docs as where their output goes: never in git.
MADE_BY_COMMANDS = (".tools", ".venv", ".venv-3.13", "data/", "bench/results/raw/", "jmeter/results/")
# Names that read as files and are not the project's: Express's method, the reader's own CA files.
NOT_OURS = {"res.json", "ca.pem", "couchbase-ca.pem"}
PATH_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".sh", ".lua", ".js", ".jmx", ".toml", ".txt", ".png", ".pem")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def bases(doc: Path) -> list[Path]:
    """Where a document's relative names start: the root, or its own folder."""
    return [ROOT, doc.parent]


def named_paths(text: str, doc: Path) -> set[str]:
    """What a document names as a file or folder: code spans and link targets that read as paths
    (a file name with its suffix, a folder with its slash, or under a folder that exists; not a
    route such as picture/raw)."""
    spans = re.findall(r"`([^`\s]+)`", text) + re.findall(r"\]\(([^)\s#]+)\)", text)
    return {
        s
        for s in (span.rstrip(".,:;") for span in spans)
        if re.fullmatch(r"[\w.-]+(/[\w.-]*)*", s)
        and not s.startswith(("/", "-", "."))
        and s not in NOT_OURS
        and (
            s.endswith(PATH_SUFFIXES)
            or s.endswith("/")
            or ("/" in s and any((base / s.split("/")[0]).is_dir() for base in bases(doc)))
        )
    }


def file_names() -> set[str]:
    """The name of every file in the tree, for a document that names one without its folder."""
    return {
        p.name
        for p in ROOT.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part in SKIPPED_DIRS for part in p.relative_to(ROOT).parts)
    }


FILE_NAMES = file_names()


def exists(name: str, doc: Path) -> bool:
    if name.startswith(MADE_BY_COMMANDS):
        return True
    if "/" not in name:
        return name in FILE_NAMES
    return any((base / name).exists() for base in bases(doc))


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_path_a_document_names_exists(doc):
    text = doc.read_text()
    missing = sorted(name for name in named_paths(text, doc) if not exists(name, doc))
    assert not missing, f"{rel(doc)} names what is not in the tree: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_make_target_a_document_names_exists(doc):
    makefile = (ROOT / "Makefile").read_text()
    # `make X` in a code span or at the start of a command line, not the verb in a sentence
    commands = re.findall(r"(?:`|^\s*)make ([a-z][\w.-]*)", doc.read_text(), re.M)
    targets = {t.rstrip(".") for t in commands}
    missing = sorted(t for t in targets if not re.search(rf"^{re.escape(t)}:", makefile, re.M))
    assert not missing, f"{rel(doc)} names make targets the Makefile lacks: {missing}"


def pointers() -> list[tuple[Path, str, str]]:
    """(file, document, section) of every pointer to a document's section, written as
    `<document>, "<section>"` or `<document> ("<section>")`, in the docs, the manifests, the code
    and the Makefile."""
    code = [*ROOT.glob("*.py"), *ROOT.glob("tools/**/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("tests/*.py")]
    sources = [*DOCS, *ROOT.glob("k8s/**/*.yaml"), ROOT / "Makefile", *(p for p in code if p != Path(__file__))]
    found = []
    for source in sources:
        for document, section in re.findall(r'([\w./-]+\.md)`?(?:, | \()"([^"]+)"', source.read_text()):
            found.append((source, document, section))
    return found


def test_there_are_section_pointers_to_check():
    assert len(pointers()) >= 5


@pytest.mark.parametrize("source, document, section", pointers(), ids=lambda x: x if isinstance(x, str) else rel(x))
def test_every_section_pointer_leads_to_a_heading(source, document, section):
    target = next((base / document for base in (ROOT, source.parent) if (base / document).is_file()), None)
    assert target is not None, f"{rel(source)}: no {document}"
    headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
    assert any(h.startswith(section) for h in headings), f"{rel(source)}: no {section!r} in {rel(target)}"


def test_bench_readme_figures_are_what_the_committed_results_make():
    check = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "figures.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr + check.stdout
    readme = (ROOT / "bench" / "README.md").read_text()
    assert set(re.findall(r"<!-- figures:([\w-]+) -->", readme)) == {"embedded", "couchbase", "capacity"}


def exported_metric_names() -> set[str]:
    """Every metric name /metrics can expose, from metrics.py's TYPE lines."""
    source = Path(metrics.__file__).read_text()
    names = set()
    for name in re.findall(r"# TYPE ([\w{}]+) ", source):
        if "{name}" in name:
            names |= {name.replace("{name}", counter) for counter in metrics.STORE_COUNTERS}
        else:
            names.add(name)
    return names


def test_the_k8s_readme_lists_exactly_the_metrics_the_service_exports():
    readme = (ROOT / "k8s" / "README.md").read_text()
    section = readme.split("## Metrics and logs", 1)[1].split("\n#", 1)[0]
    listed = set(re.findall(r"`((?:userprofile|process)_\w+)", section))
    exported = exported_metric_names()
    assert "userprofile_store_replica_reads_total" in exported
    assert listed == exported, f"not listed: {sorted(exported - listed)}; not exported: {sorted(listed - exported)}"


def test_no_document_puts_the_token_on_a_jmeter_command_line():
    """jmeter/loadtest.py's rule: the token goes in a private properties file (-q) or a file the plan
    reads (-Jtoken_file), never -Jtoken=..., which ps shows and JMeter writes to its log."""
    for doc in [*DOCS, ROOT / "jmeter" / "userprofile.jmx"]:
        assert not re.search(r"-Jtoken=[^`]", doc.read_text()), rel(doc)  # named in a code span, it is not a command
