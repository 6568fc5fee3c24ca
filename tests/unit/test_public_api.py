"""lightsweep uses only the public API of the packages it builds on, and leaves Lightning's loops alone.

Lightning, Hydra, MLflow, torch and CPython may rename or remove any `_private` name in any release,
and Lightning's loop and progress objects (`trainer.fit_loop.epoch_loop.batch_progress`, ...) are
its own bookkeeping: writing them from outside is how a resumed run ends up with a wrong step count
after an upgrade. These checks read the code (AST only: nothing is imported, nothing is trained), in
the spirit of ../shared/tools/private_api_scan.py, but the project owns them:

* no import of, or attribute access to, another package's private name (a leading underscore, not a
  __dunder__ or _sunder_; a name is the project's own when the project defines it anywhere);
* no write (`=`, `+=`, `del`, `setattr`, `load_state_dict`, `increment_*`/`reset*`) to Lightning's
  loop or progress state, the trainer's `_trainer` slot, or another object's `automatic_optimization`;
* no project class defines a `_single_underscore` method that one of its bases from another package
  also has (overriding a private hook is using private API too). Bases are found by reading their
  source (importlib's PathFinder locates files without running them); a base that cannot be read
  is imported as a last resort.

Scanned: src/, pipelines/ and the *.py at the repo root (not tests/), as the shared tool does.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import textwrap
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lightning's loop/progress state and the Trainer slot of a LightningModule: never written from here.
LOOP_STATE = {
    "fit_loop",
    "epoch_loop",
    "batch_progress",
    "optim_step_progress",
    "scheduler_progress",
    "batches_that_stepped",
    "manual_optimization",
    "automatic_optimization",
    "_trainer",
}
PROGRESS = {"batch_progress", "optim_step_progress", "scheduler_progress"}
# Names that start with an underscore but are documented public API.
PUBLIC_UNDERSCORED = {("os", "_exit"), ("sys", "_getframe")}
NAMEDTUPLE_API = {"_asdict", "_replace", "_fields", "_make", "_field_defaults"}


def private(name: str) -> bool:
    """`_name`, not `__dunder__` nor `_sunder_` (Enum's `_missing_`, Hydra's `_target_`: public API)."""
    return name.startswith("_") and not name.endswith("_")


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def report(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in sorted(findings))


# --- the project's files ---------------------------------------------------------------------------


class Project:
    """The scanned files of a repo, parsed, with their module names and the names the project defines."""

    def __init__(self, root: Path):
        self.root = root
        files = [p for d in ("src", "pipelines") for p in sorted((root / d).rglob("*.py"))]
        files += sorted(root.glob("*.py"))
        files = [p for p in files if ".venv" not in p.parts and "tests" not in p.relative_to(root).parts]
        self.trees = {p: ast.parse(p.read_text(), str(p)) for p in files}
        self.modules: dict[str, Path] = {}  # dotted name -> file
        self.roots: set[str] = set()  # the project's top-level packages/modules (dotted)
        for path in files:
            rel = path.relative_to(root).with_suffix("").parts
            parts = list(rel[1:] if rel[0] in ("src", "pipelines") else rel)
            if parts[-1] == "__init__":
                parts.pop()
            if not parts:
                continue
            self.modules[".".join(parts)] = path
            top = 1 if rel[0] != "src" or (root / "src" / parts[0] / "__init__.py").exists() else 2
            self.roots.add(".".join(parts[:top]))  # src/hydra_plugins is a namespace shared with plugins
        self.names = set()
        for tree in self.trees.values():
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.names.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    self.names.add(node.id)
                elif (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls")
                ):
                    self.names.add(node.attr)
                elif isinstance(node, ast.arg):
                    self.names.add(node.arg)

    def own(self, module: str) -> bool:
        return any(module == r or module.startswith(r + ".") for r in self.roots)

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def module_of(self, path: Path) -> str:
        return next(name for name, p in self.modules.items() if p == path)


def chain(node: ast.AST) -> list[str]:
    """`a.b[0].c`, `getattr(a.b, "c")`, `f().c` -> the names along the way: a, b, c."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return chain(node.value) + [node.attr]
    if isinstance(node, (ast.Subscript, ast.Starred)):
        return chain(node.value)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
            name = node.args[1]
            return chain(node.args[0]) + ([name.value] if isinstance(name, ast.Constant) else [])
        return chain(node.func)
    return []


# --- check 1: private names ------------------------------------------------------------------------


def private_name_uses(project: Project) -> list[Finding]:
    hits = []
    for path, tree in project.trees.items():
        where = project.rel(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if project.own(node.module):
                    continue
                bad = [p for p in node.module.split(".") if private(p)] + [
                    a.name for a in node.names if private(a.name)
                ]
                if bad:
                    names = ", ".join(a.name for a in node.names)
                    hits.append(Finding(where, node.lineno, f"from {node.module} import {names}"))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if not project.own(alias.name) and any(private(p) for p in alias.name.split(".")):
                        hits.append(Finding(where, node.lineno, f"import {alias.name}"))
            elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in project.names:
                base = node.value.id if isinstance(node.value, ast.Name) else ""
                if (base, node.attr) not in PUBLIC_UNDERSCORED and node.attr not in NAMEDTUPLE_API:
                    hits.append(Finding(where, node.lineno, ".".join(chain(node)) or f".{node.attr}"))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2
            ):
                name = node.args[1]
                if (
                    isinstance(name, ast.Constant)
                    and isinstance(name.value, str)
                    and private(name.value)
                    and name.value not in project.names
                ):
                    hits.append(Finding(where, node.lineno, f"{node.func.id}(..., {name.value!r})"))
    return hits


# --- check 2: Lightning's loop and progress state ----------------------------------------------------


def loop_state_writes(project: Project) -> list[Finding]:
    def forbidden(names: list[str]) -> bool:
        if names == ["self", "automatic_optimization"]:
            return False  # a LightningModule switching itself to manual optimization: public API
        return any(n in LOOP_STATE for n in names)

    hits = []
    for path, tree in project.trees.items():
        where = project.rel(path)
        # `loop = trainer.fit_loop` then `loop.x = ...`: follow one level of aliasing (per file).
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = chain(node.value)
                if any(n in LOOP_STATE for n in value):
                    aliases.update({t.id: value for t in targets if isinstance(t, ast.Name)})

        def full(node: ast.AST) -> list[str]:
            names = chain(node)
            return aliases.get(names[0], names[:1]) + names[1:] if names else names

        for node in ast.walk(tree):
            if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
                names = full(node)
                if forbidden(names):
                    verb = "del" if isinstance(node.ctx, ast.Del) else "assigns"
                    hits.append(Finding(where, node.lineno, f"{verb} {'.'.join(names)}"))
            elif isinstance(node, ast.Call):
                func = node.func
                if len(node.args) >= 2 and (
                    (isinstance(func, ast.Name) and func.id in ("setattr", "delattr"))
                    or (
                        isinstance(func, ast.Attribute)
                        and func.attr in ("__setattr__", "__delattr__")
                        and chain(func.value) == ["object"]
                    )
                ):
                    target, name = node.args[0], node.args[1]
                    names = full(target) + ([name.value] if isinstance(name, ast.Constant) else ["?"])
                    if forbidden(names):
                        hits.append(Finding(where, node.lineno, f"setattr {'.'.join(names)}"))
                elif isinstance(func, ast.Attribute):
                    receiver = full(func.value)
                    loopish = any("loop" in n.lower() for n in receiver)
                    if (func.attr == "load_state_dict" and loopish) or (
                        func.attr.startswith(("increment", "reset"))
                        and (loopish or any(n in PROGRESS for n in receiver))
                    ):
                        hits.append(Finding(where, node.lineno, f"calls {'.'.join(receiver)}.{func.attr}()"))
    return hits


# --- check 3: private hooks of other packages' classes ---------------------------------------------


def top_level(body: list[ast.stmt]):
    """The statements that run when a module (or class body) runs: into if/try/with, not into defs."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With)) or type(stmt).__name__ == "TryStar":
            for field in ("body", "orelse", "finalbody"):
                yield from top_level(getattr(stmt, field, []))
            for handler in getattr(stmt, "handlers", []):
                yield from top_level(handler.body)


class Sources:
    """Resolves a base-class expression to its ClassDef by reading source: nothing is executed."""

    def __init__(self, project: Project):
        self.project = project
        self.cache: dict[str, tuple[ast.Module | None, list[str] | None, bool]] = {}

    def load(self, module: str):
        """(tree or None, submodule search path or None, is_package), or None when not found."""
        if module in self.cache:
            return self.cache[module]
        found = None
        if self.project.own(module) and module in self.project.modules:
            path = self.project.modules[module]
            is_pkg = path.name == "__init__.py"
            found = (self.project.trees[path], [str(path.parent)] if is_pkg else None, is_pkg)
        elif not self.project.own(module):
            search, spec = None, None
            parts = module.split(".")
            for i in range(len(parts)):
                spec = PathFinder.find_spec(".".join(parts[: i + 1]), search)
                if spec is None:
                    break
                search = list(spec.submodule_search_locations or []) or None
                if search is None and i < len(parts) - 1:
                    spec = None
                    break
            if spec is not None:
                tree = None
                if spec.origin and spec.origin.endswith(".py"):
                    try:
                        tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
                    except (OSError, SyntaxError, ValueError):
                        pass
                found = (tree, search, spec.submodule_search_locations is not None)
        self.cache[module] = found
        return found

    def is_module(self, module: str) -> bool:
        return self.load(module) is not None

    def absolute(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        loaded = self.load(module)
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if loaded and loaded[2] else 0)
        return ".".join(parts[:keep] + ([node.module] if node.module else []))

    def lookup(self, module: str, name: str, seen: frozenset = frozenset()):
        """What `name` is in `module`: ("module", dotted), ("class", (module, ClassDef)), or None."""
        if (module, name) in seen:
            return None
        seen = seen | {(module, name)}
        loaded = self.load(module)
        if loaded is None:
            return None
        tree = loaded[0]
        stars = []
        for stmt in reversed(list(top_level(tree.body) if tree else [])):
            if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                return "class", (module, stmt)
            if isinstance(stmt, ast.ImportFrom):
                source = self.absolute(module, stmt)
                for alias in stmt.names:
                    if alias.name == "*":
                        stars.append(source)
                    elif (alias.asname or alias.name) == name:
                        if self.is_module(f"{source}.{alias.name}"):
                            return "module", f"{source}.{alias.name}"
                        return self.lookup(source, alias.name, seen)
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname == name:
                        return "module", alias.name
                    if alias.asname is None and alias.name.split(".")[0] == name:
                        return "module", name
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return self.resolve(module, stmt.value, seen)
        for source in stars:
            found = self.lookup(source, name, seen)
            if found:
                return found
        if self.is_module(f"{module}.{name}"):
            return "module", f"{module}.{name}"
        return None

    def resolve(self, module: str, expr: ast.AST, seen: frozenset = frozenset()):
        if isinstance(expr, ast.Subscript):  # Generic[T], Protocol[T]
            expr = expr.value
        if isinstance(expr, ast.Name):
            return self.lookup(module, expr.id, seen)
        if isinstance(expr, ast.Attribute):
            base = self.resolve(module, expr.value, seen)
            if base and base[0] == "module":
                return self.lookup(base[1], expr.attr, seen)
        return None

    def runtime(self, module: str, expr: ast.AST):
        """The last resort: the base object itself, imported (None when that fails)."""
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        names = chain(expr)
        if not names:
            return None
        head, rest = names[0], names[1:]
        try:
            symbol = self.lookup(module, head)
            if symbol and symbol[0] == "module":
                obj = importlib.import_module(symbol[1])
            elif hasattr(builtins, head) and symbol is None:
                obj = getattr(builtins, head)
            else:
                tree = self.load(module)[0]
                imports = [s for s in top_level(tree.body) if isinstance(s, ast.ImportFrom)]
                source, original = next(
                    (self.absolute(module, s), a.name) for s in imports for a in s.names if (a.asname or a.name) == head
                )
                obj = getattr(importlib.import_module(source), original)
            for part in rest:
                obj = getattr(obj, part)
            return obj
        except Exception:  # noqa: BLE001 - whatever fails here is reported as "cannot check"
            return None


def class_members(node: ast.ClassDef) -> set[str]:
    """Names a class body defines, and the attributes its methods set on self."""
    names = set()
    for stmt in top_level(node.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
            if not isinstance(stmt, ast.ClassDef):
                for sub in ast.walk(stmt):
                    if (
                        isinstance(sub, ast.Attribute)
                        and isinstance(sub.ctx, ast.Store)
                        and isinstance(sub.value, ast.Name)
                        and sub.value.id == "self"
                    ):
                        names.add(sub.attr)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def private_overrides(project: Project) -> list[Finding]:
    sources = Sources(project)
    hits = []
    for path, tree in project.trees.items():
        module = project.module_of(path)
        for cls in ast.walk(tree):
            if not isinstance(cls, ast.ClassDef):
                continue
            hooks = {
                fn.name: fn.lineno
                for fn in cls.body
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                and private(fn.name)
                and not fn.name.startswith("__")
            }
            if not hooks:
                continue
            # Walk the bases (through the project's own classes) up to other packages' classes.
            todo, done, external, unread = [(module, b) for b in cls.bases], set(), [], []
            while todo:
                where, base = todo.pop()
                symbol = sources.resolve(where, base)
                if symbol is None or symbol[0] != "class":
                    if project.own(where) and not (
                        isinstance(base, ast.Name)
                        and hasattr(builtins, base.id)
                        and sources.lookup(where, base.id) is None
                    ):
                        unread.append((where, base))
                    continue  # builtins (object, Exception) and unreadable bases of library classes
                owner, node = symbol[1]
                if (owner, node.name) in done:
                    continue
                done.add((owner, node.name))
                if not project.own(owner):
                    external.append((owner, node))
                todo += [(owner, b) for b in node.bases]
            for name, line in hooks.items():
                for owner, node in external:
                    if name in class_members(node):
                        hits.append(
                            Finding(
                                project.rel(path), line, f"def {cls.name}.{name} overrides {owner}.{node.name}.{name}"
                            )
                        )
                        break
            for where, base in unread:
                klass = sources.runtime(where, base)
                if klass is None:
                    hits.append(
                        Finding(
                            project.rel(path), cls.lineno, f"class {cls.name}: cannot check base {ast.unparse(base)}"
                        )
                    )
                    continue
                for name, line in hooks.items():
                    # not a class (typing.NamedTuple is a function): nothing of it is inherited
                    for k in klass.__mro__ if isinstance(klass, type) else ():
                        if not project.own(k.__module__) and name in vars(k):
                            hits.append(
                                Finding(
                                    project.rel(path),
                                    line,
                                    f"def {cls.name}.{name} overrides {k.__module__}.{k.__qualname__}.{name}",
                                )
                            )
                            break
    return sorted(set(hits))


# --- the tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project() -> Project:
    return Project(ROOT)


def test_no_private_names_of_other_packages(project):
    hits = private_name_uses(project)
    assert not hits, "lightsweep reaches into other packages' private names:\n" + report(hits)


def test_no_writes_to_lightning_loop_state(project):
    hits = loop_state_writes(project)
    assert not hits, "lightsweep writes Lightning's loop/progress state:\n" + report(hits)


def test_no_overrides_of_private_hooks(project):
    hits = private_overrides(project)
    assert not hits, "lightsweep classes override other packages' private methods:\n" + report(hits)


FAKE = {
    "src/fakepkg/__init__.py": "",
    "src/fakepkg/util.py": """
        from lightning_fabric.utilities.logger import _add_prefix
        import torch._dynamo
        from fakepkg._own import _helper          # the project's own private module: fine

        def _mine():                              # the project's own private name: fine
            return 1

        def use(trainer, obj):
            trainer._accelerator_connector.strategy
            obj._mine()
            getattr(trainer, "_logger_connector")
    """,
    "src/fakepkg/_own.py": "def _helper():\n    return 0\n",
    "src/fakepkg/models.py": """
        import pytorch_lightning as pl
        from torch import nn

        class Net(nn.Module):
            def _apply(self, fn, recurse=True):   # torch.nn.Module's private hook
                return super()._apply(fn, recurse)

            def _my_helper(self):                 # no base has it: fine
                return 0

        class Model(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.automatic_optimization = False   # public API of a LightningModule: fine

            def _load_from_state_dict(self, *args):   # torch.nn.Module's, two packages up
                pass

        class Tuned(Model):
            def _save_to_state_dict(self, *args):     # through the project's own Model
                pass
    """,
    "src/fakepkg/resume.py": """
        def restore(trainer, model, state):
            trainer.fit_loop.epoch_loop.batch_progress.total.completed = 7
            trainer.fit_loop.epoch_loop._batches_that_stepped += 1
            setattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", 3)
            model._trainer = trainer
            model.automatic_optimization = False
            loop = trainer.fit_loop
            loop.max_epochs = 3
            trainer.fit_loop.load_state_dict(state)
            trainer.fit_loop.epoch_loop.batch_progress.increment_completed()
            print(trainer.fit_loop.epoch_loop.batch_progress.total.completed)   # a read: fine
    """,
    "train.py": "from hydra._internal.utils import _locate\n",
}


def write_fake(root: Path) -> Project:
    for rel, text in FAKE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return Project(root)


def test_checks_report_a_fake_projects_violations(tmp_path):
    fake = write_fake(tmp_path)

    private_uses = report(private_name_uses(fake))
    assert "src/fakepkg/util.py:2: from lightning_fabric.utilities.logger import _add_prefix" in private_uses
    assert "src/fakepkg/util.py:3: import torch._dynamo" in private_uses
    assert "src/fakepkg/util.py:10: trainer._accelerator_connector" in private_uses
    assert "getattr(..., '_logger_connector')" in private_uses
    assert "train.py:1: from hydra._internal.utils import _locate" in private_uses
    assert "_helper" not in private_uses and "_mine" not in private_uses, private_uses

    writes = report(loop_state_writes(fake))
    for line in (3, 4, 5, 6, 7, 9, 10, 11):
        assert f"src/fakepkg/resume.py:{line}:" in writes, writes
    assert "resume.py:12:" not in writes and "models.py" not in writes, writes

    overrides = report(private_overrides(fake))
    assert "models.py:6: def Net._apply overrides torch.nn.modules.module.Module._apply" in overrides
    assert "def Model._load_from_state_dict overrides torch.nn.modules.module.Module" in overrides
    assert "def Tuned._save_to_state_dict overrides torch.nn.modules.module.Module" in overrides
    assert "_my_helper" not in overrides and "cannot check" not in overrides, overrides
