"""The README and docs/ checked against the tree they describe.

Links resolve to files (and headings), the code the README and the architecture page
name exists where they say (read from the source, nothing imported), the README stays
a front door, and the settings documented are exactly those the code reads.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from polling.settings_doc import differences, listed_in_env_example, variables_read

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").rglob("*.md"))
# The pages whose names of modules, functions and files a reader follows through the code.
CODE_MAPS = [README, REPO / "docs" / "architecture.md"]
PACKAGES = ("polling", "polls", "leaderboard", "realtime", "devservices", "testsupport")
README_MAX_LINES = 250
# .env.example shows the production values of these, not the code's defaults.
ENV_EXAMPLE_PRODUCTION_VALUES = {
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
}

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_DOTTED = re.compile(rf"(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+")
_PATH = re.compile(r"(?:[\w.-]+/)+[\w.-]+\.(?:py|md|yml|txt|ini)|[\w-]+\.py|(?:[\w-]+/)+")
# In a diagram: a path, two spaces or more, then the function or class it names.
_DIAGRAM_STEP = re.compile(r"((?:[\w-]+/)+[\w-]+\.py)\s{2,}([A-Za-z_][\w.]*)")


def without_code_blocks(text: str) -> str:
    return _FENCE.sub("", text)


def code_blocks(text: str) -> list[str]:
    return [match.group(0) for match in _FENCE.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for line in without_code_blocks(path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match[1])
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def module_statements(body: list[ast.stmt]):
    """Statements of a module or class body, those under if/try at its top level included."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            handlers = [handler.body for handler in getattr(node, "handlers", [])]
            for block in (node.body, node.orelse, getattr(node, "finalbody", []), *handlers):
                yield from module_statements(block)


def defines(body: list[ast.stmt], name: str) -> ast.stmt | None:
    for node in module_statements(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (alias.asname or alias.name.split(".")[0]) == name for alias in node.names
        ):
            return node
    return None


def resolves_in(path: Path, chain: list[str]) -> bool:
    """Whether `path` defines chain[0], and each class along the chain the next name."""
    body = ast.parse(path.read_text()).body
    for part in chain:
        node = defines(body, part)
        if node is None:
            return False
        body = node.body if isinstance(node, ast.ClassDef) else []
    return True


def dotted_name_resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        for module in (base.with_suffix(".py"), base / "__init__.py"):
            if module.is_file():
                return resolves_in(module, parts[cut:])
    return False


def doc_id(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- The README ---------------------------------------------------------------------------


def test_readme_is_a_front_door_of_at_most_250_lines():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_keeps_the_two_commands_and_the_seeds_contract():
    text = README.read_text()
    for needed in (
        "make run",
        "make test",
        "POST /polls",
        "POST /polls/{id}/vote",
        "GET /polls/{id}",
        "GET /leaderboard",
        "ws://host/ws",
        "curl",
    ):
        assert needed in text, needed


# --- Links ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [README, *DOCS], ids=doc_id)
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in _LINK.findall(without_code_blocks(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, broken


def test_slugs_follow_githubs_rules():
    assert slug("3. The broadcast: PostgreSQL to the screens") == "3-the-broadcast-postgresql-to-the-screens"
    assert slug("Where the vote's web CPU goes") == "where-the-votes-web-cpu-goes"
    assert slug("`POST /polls/{id}/vote`") == "post-pollsidvote"


# --- Names of code ------------------------------------------------------------------------


@pytest.mark.parametrize("page", CODE_MAPS, ids=doc_id)
def test_every_module_function_and_file_named_in_backticks_exists(page: Path):
    missing = []
    for span in _CODE_SPAN.findall(without_code_blocks(page.read_text())):
        if _DOTTED.fullmatch(span):
            if not dotted_name_resolves(span):
                missing.append(span)
        elif _PATH.fullmatch(span) and not (REPO / span).exists():
            missing.append(span)
    assert not missing, f"{doc_id(page)} names what the tree does not have: {missing}"


@pytest.mark.parametrize("page", CODE_MAPS, ids=doc_id)
def test_every_step_of_a_diagram_names_a_real_file_and_function(page: Path):
    missing, steps = [], 0
    for block in code_blocks(page.read_text()):
        for path, name in _DIAGRAM_STEP.findall(block):
            steps += 1
            if not (REPO / path).is_file():
                missing.append(path)
            elif not resolves_in(REPO / path, name.split(".")):
                missing.append(f"{path} {name}")
    assert not missing, f"{doc_id(page)}'s diagram names what the tree does not have: {missing}"
    if page == README:
        assert steps >= 10, "the README's vote path lost its steps"


def test_the_name_checks_catch_what_is_not_there():
    assert dotted_name_resolves("polls.worker.loop.VoteWorker.commit_offsets")
    assert dotted_name_resolves("polls.domain.services")
    assert not dotted_name_resolves("polls.worker.loop.VoteWorker.no_such_method")
    assert not dotted_name_resolves("polls.no_such_module.function")
    assert not resolves_in(REPO / "polls" / "domain" / "services.py", ["votes_apply", "inner"])


# --- Settings from one source ---------------------------------------------------------------


def test_settings_doc_and_env_example_list_exactly_the_variables_the_code_reads():
    read = variables_read()
    assert {"SECRET_KEY", "KAFKA_BROKERS", "LOG_FORMAT", "WEB_SHUTDOWN_TIMEOUT"} <= set(read)  # the scan works
    assert differences() == []


def test_env_example_gives_the_codes_defaults():
    listed = listed_in_env_example()
    wrong = {}
    for name, variable in variables_read().items():
        default = variable.default
        if default is None or name in ENV_EXAMPLE_PRODUCTION_VALUES:
            continue
        if isinstance(default, bool):
            expected = "1" if default else "0"
        elif isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        else:
            expected = str(default)
        if listed[name] != expected:
            wrong[name] = (listed[name], expected)
    assert not wrong, f".env.example value against the code's default: {wrong}"
