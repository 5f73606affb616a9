"""The environment variables the code reads, found in its source: the one list of settings.

docs/settings.md and .env.example are checked against it (tests/test_docs.py), so a
variable added to the code without its documentation, or documented and no longer
read, fails the tests. A variable counts as read where the code calls one of the
readers of polling.env, os.environ.get or os.getenv with its name as a literal.

    python -m polling.settings_doc          # every variable read, with the files that read it
    python -m polling.settings_doc --check  # exit 1 naming what the docs miss or list in excess
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The packages deployed; their tests are left out.
PACKAGES = ("polling", "polls", "leaderboard", "realtime")
READERS = {"env_str", "env_rate", "env_bool", "env_int", "env_float", "env_list", "env_networks"}
SETTINGS_DOC = REPO / "docs" / "settings.md"
ENV_EXAMPLE = REPO / ".env.example"


@dataclass
class Variable:
    name: str
    has_default: bool = False
    required: bool = False
    # The default when the code gives it as a literal (a number, a string, a boolean).
    default: object = None
    files: list[str] = field(default_factory=list)


def variables_read_by(path: Path) -> dict[str, Variable]:
    """The variables one module reads, by name."""
    found: dict[str, Variable] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in READERS:
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            default_node = node.args[1] if len(node.args) > 1 else keywords.get("default")
            required = keywords.get("required")
            found[first.value] = Variable(
                name=first.value,
                has_default=default_node is not None,
                required=required is not None and not (isinstance(required, ast.Constant) and not required.value),
                default=default_node.value if isinstance(default_node, ast.Constant) else None,
            )
        elif ast.unparse(func) in ("os.getenv", "os.environ.get"):
            found[first.value] = Variable(name=first.value, has_default=len(node.args) > 1)
    return found


def variables_read(root: Path = REPO) -> dict[str, Variable]:
    """Every variable the deployed packages read, by name (polling/env.py itself excepted)."""
    variables: dict[str, Variable] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "tests" in path.relative_to(root).parts or path.name == "env.py":
                continue
            for name, variable in variables_read_by(path).items():
                kept = variables.setdefault(name, variable)
                kept.files.append(str(path.relative_to(root)))
    return variables


def documented_in_settings_doc(path: Path = SETTINGS_DOC) -> set[str]:
    """The variables in the first column of docs/settings.md's tables."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def listed_in_env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The variables .env.example sets (or shows commented out), with their values."""
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(), flags=re.MULTILINE))


def differences(root: Path = REPO) -> list[str]:
    """What docs/settings.md and .env.example miss, or list that nothing reads."""
    read = set(variables_read(root))
    problems = []
    for what, listed in (
        ("docs/settings.md", documented_in_settings_doc(root / "docs" / "settings.md")),
        (".env.example", set(listed_in_env_example(root / ".env.example"))),
    ):
        if missing := sorted(read - listed):
            problems.append(f"{what} does not document {', '.join(missing)}")
        if stale := sorted(listed - read):
            problems.append(f"{what} documents what the code does not read: {', '.join(stale)}")
    return problems


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = differences()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for name, variable in sorted(variables_read().items()):
        print(f"{name}\t{', '.join(variable.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
