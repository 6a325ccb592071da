"""The layers point one way: each package's imports, read with `ast` (type-only
imports included), stay inside what its layer may use.

    wire ◄── backends ◄── meshd (catalog, blob store, object service) ◄── s3gateway
                 ▲            ▲                                          registry_client
    registry ────┘ (nothing above it)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("meshd", "s3gateway", "backends", "replication", "registry_client", "registry", "wire")

# package (or module) -> prefixes of modules it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "s3gateway": ("backends", "replication", "meshd.catalog", "registry"),
    "backends": ("meshd", "s3gateway", "replication", "registry", "registry_client"),
    "registry": ("s3gateway", "backends", "meshd", "replication", "registry_client"),
    "registry_client": ("s3gateway", "backends"),
    "wire": tuple(p for p in PACKAGES if p != "wire"),
    # Records every layer shares: importable without SQLite or any service.
    "meshd/model.py": tuple(PACKAGES) + ("sqlite3", "sqlite_utils", "aiohttp"),
    "registry_client/identity.py": tuple(PACKAGES),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"  # every import names its package
            assert node.module is not None
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _files(target: str) -> list[Path]:
    path = ROOT / target
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("target", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(target: str) -> None:
    files = _files(target)
    assert files, f"nothing found at {target}"
    offences = [
        f"{f.relative_to(ROOT)} imports {module}"
        for f in files
        for module in sorted(imported_modules(f))
        if any(_matches(module, p) for p in FORBIDDEN[target])
    ]
    assert offences == []


def test_the_check_sees_imports(tmp_path: Path) -> None:
    """The parser finds every form of import, so an offence cannot hide."""
    f = tmp_path / "m.py"
    f.write_text("import backends.s3\nfrom backends import base\nfrom typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n    from replication.gossip import X\n")
    found = imported_modules(f)
    assert {"backends.s3", "backends", "backends.base", "replication.gossip"} <= found
    assert any(_matches(m, "backends") for m in found) and not _matches("backendsx", "backends")
