"""The package's layering (README, Layout): each part imports only the parts listed before it, so
there is no import cycle between them, whether the import is at module level or inside a function."""
import ast
from pathlib import Path

import perforated

PKG = Path(perforated.__file__).parent
# lowest first; a part may import the parts before it (and the package root, for its __path__)
ORDER = ["files", "timing", "data", "_c", "ops", "graph", "search", "train", "onnx", "torch"]


def _part(module: str) -> str:
    """perforated.graph.model -> graph; perforated.files -> files; perforated -> '' (the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    """Absolute names of the perforated modules `path` imports anywhere in it."""
    rel = path.relative_to(PKG).with_suffix("").parts
    package = ["perforated"] + list(rel[:-1])  # the package the file is in
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    yield ".".join(base + [node.module])
                else:
                    yield from (".".join(base + [a.name]) for a in node.names)
            elif node.module and node.module.split(".")[0] == "perforated":
                yield node.module
                if node.module == "perforated":
                    yield from ("perforated." + a.name for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "perforated")


def test_every_part_is_in_the_order():
    parts = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert parts == set(ORDER), f"parts of the package not in ORDER (or gone): {parts ^ set(ORDER)}"


def test_parts_import_only_lower_parts():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel == Path("__init__.py"):
            continue  # the root re-exports the public API
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for target in _imports(path):
            part = _part(target)
            if part in ("", own) or target in ("perforated.__init__",):
                continue
            if part in ORDER and ORDER.index(part) > ORDER.index(own):
                wrong.append(f"{rel} imports {target} ({part} comes after {own})")
            elif part not in ORDER and part not in dir(perforated):
                wrong.append(f"{rel} imports {target}, which is no part of the package")
    assert not wrong, "\n".join(wrong)
