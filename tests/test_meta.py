"""Meta-tests: every hook spec is documented with its exact signature and exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from storage_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, value in vars(hookspecs).items()
               if name.startswith("storage_") and inspect.isfunction(value))
TEST_FILES = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py"),
              ROOT / "src/storage_core/testing/conformance.py"]


def signature_text(name: str) -> str:
    return name + str(inspect.signature(getattr(hookspecs, name))).replace("'", "")


def test_there_are_hooks() -> None:
    assert {"storage_backends", "storage_upload", "storage_reader", "storage_health",
            "storage_register_commands"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_exact_signature(name: str) -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "docs/hooks.md").read_text(), flags=re.MULTILINE)
    assert signature_text(name) in headings, f"docs/hooks.md needs a section '## {signature_text(name)}'"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring(name: str) -> None:
    assert (getattr(hookspecs, name).__doc__ or "").strip()


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_referenced_by_a_test(name: str) -> None:
    pattern = re.compile(rf"\b{name}\b")
    users = [path.name for path in TEST_FILES if path.name != "test_meta.py" and pattern.search(path.read_text())]
    assert users, f"no test exercises {name}"


@pytest.mark.parametrize("source", ["x", "reddit"])
def test_every_schema_column_is_documented(source: str) -> None:
    from storage_core.schema import SCHEMA_VERSION, schema_for

    text = (ROOT / "docs/schema.md").read_text()
    assert f"(version {SCHEMA_VERSION})" in text.splitlines()[0]
    missing = [field.name for field in schema_for(source) if f"`{field.name}`" not in text]
    assert missing == [], f"docs/schema.md does not document {missing}"
