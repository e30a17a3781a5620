"""Extract object shapes from the typed classes of Stripe's Python library, as OpenAPI.

Stripe publishes its OpenAPI description of an API version in a public repository this
project cannot reach; the `stripe` package on PyPI is generated from that description and
annotates every field of every object (`Optional[str]`, `ExpandableField["Customer"]`,
`List[...]`, nested `class BillingDetails(StripeObject)`). This script reads the package's
source with `ast` (nothing is imported or run) and writes the subset of OpenAPI
`components.schemas` that `scripts/generate_schemas.py` reads: properties, `nullable`,
`required`, `$ref`, `anyOf`, `x-expandableFields`, and `format: unix-time`. No prose is
copied: a docstring is read only to tell a Unix time from a plain integer.

    pip install stripe==16.1.0                    # in the dev extras
    python scripts/extract_stripe_python.py       # or: ... PATH/TO/stripe (an unpacked wheel)
    python scripts/extract_stripe_python.py --check

writes `vendor/stripe-python/components.<version>.json.gz` (version from the package's
`_api_version.py`). See `vendor/stripe-python/README.md`.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.util
import json
import re
import sys
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "vendor" / "stripe-python"

Schema = dict[str, t.Any]

# The typed classes declare Unix times as plain `int`. An `int` is a time when its
# docstring says so ("Measured in seconds since the Unix epoch") or its name is one of
# Stripe's names for times (`created`, `*_at`, `*_date`, `period.start`, `trial_end`, ...).
# Checked on the 2024-06-20 OpenAPI description, where Stripe marks times with
# `format: unix-time`: the rule finds all 256 marked fields, and flags 10 more, each of
# them documented there as a time (see `UNDECLARED_UNIX_TIMES` in generate_schemas.py).
UNIX_TIME_DOC = re.compile(r"unix (epoch|timestamp|time)|seconds since the (unix )?epoch", re.I)
UNIX_TIME_NAME = re.compile(
    r"^(created|date|start|end|timestamp|deadline|billing_cycle_anchor|capture_before"
    r"|deletes_after|due_by|expires_after|next_payment_attempt|redeem_by"
    r"|next_pending_invoice_item_invoice"
    r"|.*_at|.*_date|.*_on|.*_start|.*_end|.*_time|.*_timestamp|.*_until|.*_deadline)$"
)

# Fields Stripe returns only when asked with `expand[]` although they are not expandable
# ids (so the typed classes declare them as plain lists): the tap expands them.
INCLUDABLE: dict[str, tuple[str, ...]] = {"price": ("tiers",), "plan": ("tiers",)}

# Folders of the package that hold request parameters, services or the v2 API: no v1
# objects there.
SKIPPED_DIRS = {"params", "v2"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Extractor:
    def __init__(self, package: Path) -> None:
        self.package = package
        self.components: dict[str, Schema] = {}
        # (module, class name) -> component name, for every top-level object class.
        self.objects: dict[tuple[str, str], str] = {}
        self.trees: dict[str, ast.Module] = {}
        self.imports: dict[str, dict[str, tuple[str, str]]] = {}
        self.unresolved: set[str] = set()

    def modules(self) -> t.Iterator[tuple[str, Path]]:
        for path in sorted(self.package.rglob("*.py")):
            rel = path.relative_to(self.package)
            if set(rel.parts[:-1]) & SKIPPED_DIRS or path.stem.endswith("_service"):
                continue
            module = "stripe." + ".".join(rel.with_suffix("").parts)
            yield module, path

    def index(self) -> None:
        """Parse every module; name each class that has an `OBJECT_NAME`."""
        taken: set[str] = set()
        for module, path in self.modules():
            tree = ast.parse(path.read_text(encoding="utf-8"))
            self.trees[module] = tree
            self.imports[module] = _imports(tree)
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and (name := _object_name(node)):
                    # `DeletedCustomer` shares `customer` with `Customer`.
                    component = name if name not in taken else _snake(node.name)
                    taken.add(component)
                    self.objects[(module, node.name)] = component

    def run(self) -> dict[str, Schema]:
        self.index()
        for (module, class_name), component in self.objects.items():
            node = next(
                n for n in self.trees[module].body
                if isinstance(n, ast.ClassDef) and n.name == class_name
            )
            self.add_class(module, node, component, nested={})
            extra = INCLUDABLE.get(component, ())
            self.components[component]["x-expandableFields"] = sorted(
                {*self.components[component]["x-expandableFields"], *extra}
            )
        return dict(sorted(self.components.items()))

    def add_class(
        self, module: str, node: ast.ClassDef, component: str, nested: dict[str, str]
    ) -> None:
        """One component per class; nested classes become `<component>_<field>`-like names."""
        inner = dict(nested)
        for child in node.body:
            if isinstance(child, ast.ClassDef):
                inner[child.name] = f"{component}_{_snake(child.name)}"
        for child in node.body:
            if isinstance(child, ast.ClassDef):
                self.add_class(module, child, inner[child.name], inner)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        expandable: list[str] = []
        body = node.body
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            name = stmt.target.id
            if name.startswith("_") or name.isupper() or _is_classvar(stmt.annotation):
                continue
            doc = _docstring_after(body, i)
            context = _Context(self, module, inner, doc, name)
            schema, nullable = context.convert_top(stmt.annotation)
            if context.expandable:
                expandable.append(name)
            if nullable:
                schema = {**schema, "nullable": True}
            else:
                required.append(name)
            properties[name] = schema
        self.components[component] = {
            "type": "object",
            "properties": properties,
            "required": sorted(required),
            "x-expandableFields": sorted(expandable),
        }

    def ref(self, module: str, name: str, nested: dict[str, str]) -> str | None:
        """The component a class name written in `module` refers to."""
        if name in nested:
            return nested[name]
        if (module, name) in self.objects:
            return self.objects[(module, name)]
        target = self.imports[module].get(name)
        if target and target in self.objects:
            return self.objects[target]
        return None


class _Context:
    """Converts one annotation; notes whether it was an `ExpandableField`."""

    def __init__(
        self, extractor: Extractor, module: str, nested: dict[str, str], doc: str, field: str
    ) -> None:
        self.x = extractor
        self.module = module
        self.nested = nested
        self.doc = doc
        self.field = field
        self.expandable = False

    def convert_top(self, node: ast.expr) -> tuple[Schema, bool]:
        nullable = False
        if _head(node) == "Optional":
            nullable, node = True, _arg(node)
        return self.convert(node), nullable

    def convert(self, node: ast.expr) -> Schema:
        head = _head(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.convert(ast.parse(node.value, mode="eval").body)
        if isinstance(node, ast.Name):
            return self.named(node.id)
        if isinstance(node, ast.Attribute):
            return self.named(node.attr)
        if head == "Optional":
            return {**self.convert(_arg(node)), "nullable": True}
        if head == "Literal":
            values = _args(node)
            kinds = {type(v.value) for v in values if isinstance(v, ast.Constant)}
            if kinds == {bool}:
                return {"type": "boolean"}
            if kinds == {int}:
                return {"type": "integer"}
            return {"type": "string"}
        if head == "Union":
            options = [self.convert(a) for a in _args(node)]
            kinds = {o.get("type") for o in options if "$ref" not in o and "anyOf" not in o}
            if kinds == {"string"} and all("$ref" not in o for o in options):
                return {"type": "string"}  # Literal[...] or str
            return {"anyOf": options}
        if head == "ExpandableField":
            self.expandable = True
            target = self.convert(_arg(node))
            refs = target.get("anyOf", [target])
            return {"anyOf": [{"type": "string"}, *refs]}
        if head == "List":
            return {"type": "array", "items": self.convert(_arg(node))}
        if head in ("Dict", "Mapping"):
            return {"type": "object", "additionalProperties": self.convert(_args(node)[-1])}
        if head == "UntypedStripeObject":
            return {"type": "object", "additionalProperties": self.convert(_arg(node))}
        if head in ("ListObject", "SearchResultObject"):
            return {
                "type": "object",
                "properties": {
                    "object": {"type": "string"},
                    "data": {"type": "array", "items": self.convert(_arg(node))},
                    "has_more": {"type": "boolean"},
                    "url": {"type": "string"},
                },
                "required": ["data", "has_more", "object", "url"],
            }
        return {}

    def named(self, name: str) -> Schema:
        if name == "str":
            return {"type": "string"}
        if name == "int":
            if UNIX_TIME_DOC.search(self.doc) or UNIX_TIME_NAME.match(self.field):
                return {"type": "integer", "format": "unix-time"}
            return {"type": "integer"}
        if name == "Decimal":
            return {"type": "string"}  # Stripe sends decimals as strings ("12.5")
        if name == "float":
            return {"type": "number"}
        if name == "bool":
            return {"type": "boolean"}
        if name == "Any":
            return {}
        if name in ("StripeObject", "object"):
            return {"type": "object"}
        component = self.x.ref(self.module, name, self.nested)
        if component is None:
            self.x.unresolved.add(f"{self.module}: {name}")
            return {}
        return {"$ref": f"#/components/schemas/{component}"}


def _head(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):
        value = node.value
        if isinstance(value, ast.Name):
            return value.id
        if isinstance(value, ast.Attribute):
            return value.attr
    return None


def _args(node: ast.expr) -> list[ast.expr]:
    inner = t.cast("ast.Subscript", node).slice
    return list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]


def _arg(node: ast.expr) -> ast.expr:
    return _args(node)[0]


def _is_classvar(node: ast.expr) -> bool:
    return _head(node) == "ClassVar" or (isinstance(node, ast.Name) and node.id == "ClassVar")


def _object_name(node: ast.ClassDef) -> str | None:
    for stmt in node.body:
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "OBJECT_NAME"
            and isinstance(stmt.value, ast.Constant)
        ):
            return str(stmt.value.value)
    return None


def _docstring_after(body: list[ast.stmt], i: int) -> str:
    if i + 1 < len(body):
        nxt = body[i + 1]
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            return str(nxt.value.value)
    return ""


def _imports(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """Local name -> (module, class), from every `from stripe.x import Y [as Z]`, including
    those under `if TYPE_CHECKING:`."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stripe"):
            for alias in node.names:
                found[alias.asname or alias.name] = (t.cast("str", node.module), alias.name)
    return found


def api_version(package: Path) -> str:
    text = (package / "_api_version.py").read_text(encoding="utf-8")
    match = re.search(r'CURRENT = "([^"]+)"', text)
    if not match:
        raise ValueError(f"no CURRENT version in {package / '_api_version.py'}")
    return match.group(1)


def library_version(package: Path) -> str:
    match = re.search(r'VERSION = "([^"]+)"', (package / "_version.py").read_text("utf-8"))
    return match.group(1) if match else "unknown"


def installed_package() -> Path:
    """The `stripe` package installed beside this Python (found, not imported)."""
    spec = importlib.util.find_spec("stripe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no `stripe` package installed: pip install stripe==16.1.0")
    return Path(next(iter(spec.submodule_search_locations)))


def extract(package: Path) -> tuple[str, str]:
    """(API version, the vendored file's JSON text) from a `stripe` package's source."""
    version = api_version(package)
    extractor = Extractor(package)
    spec = {
        "info": {
            "version": version,
            "x-source": f"stripe-python {library_version(package)} (PyPI `stripe`), "
            "typed classes",
        },
        "components": {"schemas": extractor.run()},
    }
    for name in sorted(extractor.unresolved):
        print(f"unresolved type (left untyped): {name}", file=sys.stderr)
    return version, json.dumps(spec, sort_keys=True, separators=(",", ":")) + "\n"


def vendored_path(version: str, out_dir: Path = OUT_DIR) -> Path:
    return out_dir / f"components.{version}.json.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "package", type=Path, nargs="?",
        help="the `stripe` folder of an unpacked wheel (default: the installed package)",
    )
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the vendored file differs; write nothing"
    )
    args = parser.parse_args(argv)
    package = args.package or installed_package()
    version, text = extract(package)
    out = vendored_path(version, args.out_dir)
    if args.check:
        same = out.is_file() and gzip.decompress(out.read_bytes()).decode() == text
        if not same:
            print(f"out of date: {out} (from {package})")
        return 0 if same else 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    print(f"{out}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
