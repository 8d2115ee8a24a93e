"""The Lambda layer ships only what runs on AWS (docs/design.md, "Package layout").

The layer is `layers/outbound/` (template.yaml: `ContentUri`, `BuildMethod: python3.13`). SAM's
python builder installs `requirements.txt` and copies every file of that folder except a fixed
list of names (caches, compiled files, packaging metadata, virtualenvs). These tests build that
same file list and fail if the developer kit (`devkit/phonon_outbound_dev`: the simulator, the
local runner, the command line) or its dev-only dependencies would reach the layer, and walk
every module of the layer (ast, imports anywhere in a module, also inside functions) to fail if
one imports the kit, moto, yaml or werkzeug.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "outbound"
KIT = ROOT / "devkit" / "phonon_outbound_dev"

# The names SAM's python builder leaves out when it copies the layer's folder (it matches them
# against every file and folder name at any depth).
BUILDER_EXCLUDES = (
    ".aws-sam", ".chalice", ".git", ".gitignore", "*.pyc", "__pycache__", "*.so", ".Python",
    "*.egg-info", "*.egg", "pip-log.txt", "pip-delete-this-directory.txt", "htmlcov", ".tox", ".nox",
    ".coverage", ".cache", ".pytest_cache", ".python-version", ".mypy_cache", ".dmypy.json", ".pyre",
    ".env", ".venv", "venv", "venv.bak", "env.bak", "ENV", "env", ".vscode", ".idea",
)
# Top-level modules the layer must never import: the kit itself and what only the kit needs.
FORBIDDEN_IMPORTS = {"phonon_outbound_dev", "moto", "yaml", "werkzeug"}
# Distributions that are for development only (pyproject.toml's [dev] extra and the kit's own).
DEV_ONLY_REQUIREMENTS = {"moto", "pyyaml", "werkzeug", "pytest", "hypothesis", "ruff", "mypy", "cfn-lint",
                         "aws-sam-translator", "phonon-outbound"}


def _excluded(relative: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in BUILDER_EXCLUDES)


def layer_files() -> list[Path]:
    """Every file SAM copies into the layer, relative to `layers/outbound/`."""
    return sorted(p.relative_to(LAYER) for p in LAYER.rglob("*")
                  if p.is_file() and not _excluded(p.relative_to(LAYER)))


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def kit_modules() -> set[str]:
    """The kit's modules relative to its package ('cli', 'local.runner', 'simulator', ...)."""
    found = set()
    for p in KIT.rglob("*.py"):
        parts = p.relative_to(KIT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found.add(".".join(parts))
            found.add(parts[0])
    return found


def module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved against `module`),
    wherever the import statement is; also `importlib.import_module("x")` with a literal name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in {"import_module", "__import__"}):
            names.add(node.args[0].value)
    return names


def top_level_classes(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}


FILES = layer_files()
MODULES = [f for f in FILES if f.suffix == ".py"]


def test_the_file_list_is_the_layer():
    """Not vacuous: the list holds the package's runtime modules and the requirements."""
    assert Path("requirements.txt") in FILES
    for name in ("ingest.py", "dispatch.py", "webhook.py", "wiring.py", "store/facade.py", "api/client.py",
                 "contacts/reader.py"):
        assert Path("phonon_outbound", name) in FILES
    assert kit_modules() >= {"cli", "check", "redrive", "simulator", "local", "local.runner", "local.cfn"}


def test_no_module_of_the_kit_is_in_the_layer():
    kit = kit_modules()
    in_layer = {str(f): module_name(f.relative_to("phonon_outbound")) for f in MODULES
                if f.parts[0] == "phonon_outbound"}
    shipped_kit = {f: m for f, m in in_layer.items()
                   if m in kit or m.split(".")[0] in kit or m.split(".")[-1] in kit}
    assert shipped_kit == {}
    assert [str(f) for f in MODULES if f.parts[0] != "phonon_outbound"] == []  # no other package


def test_no_class_of_the_kit_is_defined_in_the_layer():
    """A copy of the simulator or runner under another name is still the kit."""
    kit_classes = set().union(*(top_level_classes(p) for p in KIT.rglob("*.py")))
    assert {"PhononSimulator", "LocalPipeline", "LocalStack", "LocalState"} <= kit_classes
    defined = {str(f): sorted(top_level_classes(LAYER / f) & kit_classes) for f in MODULES}
    assert {f: c for f, c in defined.items() if c} == {}


@pytest.mark.parametrize("relative", MODULES, ids=str)
def test_layer_module_imports_no_kit_and_no_dev_dependency(relative):
    imports = imported_modules(LAYER / relative, module_name(relative))
    assert imports or not (LAYER / relative).read_text().strip()  # parsed (an empty __init__ imports nothing)
    assert sorted(n for n in imports if n.split(".")[0] in FORBIDDEN_IMPORTS) == []


def test_layer_requirements_hold_no_dev_only_package():
    runtime = requirement_names(LAYER / "requirements.txt")
    assert {"aws-lambda-powertools", "phonenumbers", "requests"} <= runtime
    assert sorted(runtime & DEV_ONLY_REQUIREMENTS) == []


def test_the_import_walk_sees_the_kit_when_it_is_there():
    """The walk is not blind: the kit's own modules import the layer, yaml and each other (moto
    runs in a child process the runner starts from source text, so no import statement names it)."""
    seen = set().union(*(imported_modules(p, "phonon_outbound_dev." + module_name(p.relative_to(KIT)))
                         for p in KIT.rglob("*.py")))
    assert {"phonon_outbound.wiring", "yaml", "phonon_outbound_dev.simulator", "phonon_outbound_dev.local.state"} <= seen


def test_setup_installs_every_package_of_both_roots():
    """pyproject.toml names the packages one by one (two roots): a new subpackage must be added."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"phonon_outbound": "layers/outbound/phonon_outbound",
                                     "phonon_outbound_dev": "devkit/phonon_outbound_dev"}
    on_disk = {module_name(p.relative_to(root.parent)) for root in (LAYER / "phonon_outbound", KIT)
               for p in root.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert set(config["packages"]) == on_disk
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["phonon-outbound"] == "phonon_outbound_dev.cli:main"
