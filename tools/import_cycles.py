#!/usr/bin/env python3
"""Checks that the modules under src/ import each other without cycles, at every level.

    python3 tools/import_cycles.py            # report; exit 1 if any cycle is found
    python3 tools/import_cycles.py --edges    # also print every resolved file-to-file edge

What counts. Every file is a module (`foo.rs` or `foo/mod.rs`). A file's references are its
`use` declarations (groups expanded) and the `crate::`/`super::`/`self::` paths in its code,
tests left out (the `#[cfg(test)]` module at a file's end). Each reference is resolved to the
module that *defines* the item: a path that ends at a module names that module, and a name a
module only re-exports (`pub use`) is followed to where it is defined.

The rule checked. A module and everything below it is one unit to the rest of the crate. For
every module with children, the children (each with its whole subtree) must form an acyclic
graph: child A depends on child B when any file in A's subtree references an item defined in
B's subtree. A parent and its own children may read each other (the parent re-exports them,
a child reads the types its parent defines, as `engine::graph`'s passes read `Graph`): that is
containment, not a cycle. At the top level this is the one-way module graph of
ARCHITECTURE.md; below it, it forbids e.g. two sibling files reaching into each other.
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_of(path: Path) -> tuple:
    """The module path of a source file, e.g. src/engine/graph/mod.rs -> ('engine', 'graph')."""
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests_and_comments(text: str) -> str:
    # The test module sits at the end of a file by this crate's convention.
    m = re.search(r"^#\[cfg\(test\)\]\s*\n(#\[[^\]]*\]\s*\n)*mod \w+", text, re.M)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)  # line and doc comments
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)  # string literals
    return text


def expand_use(tree: str) -> list:
    """`a::{b, c::{d, self}}` -> [['a','b'], ['a','c','d'], ['a','c']] (aliases dropped)."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, t):
        if t.startswith("{") and t.endswith("}"):
            depth, start = 0, 1
            for i, ch in enumerate(t):
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if (ch == "," and depth == 1) or i == len(t) - 1:
                    item = t[start:i]
                    if item:
                        walk(prefix, item)
                    start = i + 1
            return
        if "::{" in t:
            head, rest = t.split("::{", 1)
            walk(prefix + head.split("::"), "{" + rest)
            return
        t = t.split("as")[0] if re.search(r"\bas\b", t) else t
        segs = [s for s in t.split("::") if s]
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        if segs and segs[-1] == "*":
            segs = segs[:-1]
        out.append(prefix + segs)

    walk([], tree)
    return out


class Crate:
    def __init__(self):
        self.files = {}  # module path -> file
        self.text = {}
        for f in sorted(SRC.rglob("*.rs")):
            if f.name == "main.rs":
                continue  # the binary: it imports the library, nothing imports it
            mod = module_of(f)
            self.files[mod] = f
            self.text[mod] = strip_tests_and_comments(f.read_text())
        self.uses = {m: self._uses(m) for m in self.files}
        # name -> absolute path, for the names each module re-exports or imports
        self.imports = {m: self._imports(m) for m in self.files}

    def _uses(self, mod):
        found = []
        for m in re.finditer(r"\b(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", self.text[mod]):
            found.extend(expand_use(m.group(1)))
        return found

    def absolute(self, mod, segs):
        """A path as written in `mod` made absolute (None for other crates and std)."""
        if not segs:
            return None
        head = segs[0]
        if head == "crate":
            return list(segs[1:])
        if head == "self":
            return list(mod) + list(segs[1:])
        if head == "super":
            base = list(mod)
            while segs and segs[0] == "super":
                if not base:
                    return None
                base.pop()
                segs = segs[1:]
            return base + list(segs)
        if tuple(list(mod) + [head]) in self.files:  # a child module
            return list(mod) + list(segs)
        return None  # std, core, an external crate, or a local name (resolved by imports)

    def _imports(self, mod):
        table = {}
        for segs in self.uses[mod]:
            ab = self.absolute(mod, segs)
            if ab:
                table[ab[-1] if ab else ""] = ab
        return table

    def defining_module(self, ab, depth=0):
        """The module where the item at absolute path `ab` is defined."""
        i = 0
        while i < len(ab) and tuple(ab[: i + 1]) in self.files:
            i += 1
        mod = tuple(ab[:i])
        if i == len(ab) or depth > 20:
            return mod  # the path names a module
        name = ab[i]
        target = self.imports.get(mod, {}).get(name)
        if target and target != ab and re.search(
            r"\bpub(?:\([^)]*\))?\s+use\b[^;]*\b" + re.escape(name) + r"\b", self.text[mod]
        ):
            return self.defining_module(target + ab[i + 1 :], depth + 1)
        return mod

    def references(self, mod):
        paths = [self.absolute(mod, s) for s in self.uses[mod]]
        body = re.sub(r"\buse\s+[^;]+;", "", self.text[mod])
        for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", body):
            paths.append(self.absolute(mod, m.group(1).split("::")))
        # uses of a name imported from a child, e.g. `fuse::InferenceCache`
        for m in re.finditer(r"(?<![:\w])(\w+)::(\w+)", body):
            child = tuple(list(mod) + [m.group(1)])
            if child in self.files:
                paths.append(list(child) + [m.group(2)])
        targets = set()
        for p in paths:
            if p:
                targets.add(self.defining_module(p))
        targets.discard(mod)
        return targets


def is_within(mod, ancestor):
    return mod[: len(ancestor)] == ancestor


def sccs(nodes, edges):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    crate = Crate()
    refs = {m: crate.references(m) for m in crate.files}
    if "--edges" in sys.argv:
        for m in sorted(refs):
            for t in sorted(refs[m]):
                print(f"{'::'.join(m) or 'crate'} -> {'::'.join(t) or 'crate'}")
    cycles = []
    levels = 0
    for parent in sorted(crate.files):
        children = sorted(m for m in crate.files if len(m) == len(parent) + 1 and is_within(m, parent))
        if len(children) < 2:
            continue
        levels += 1
        edges = defaultdict(set)
        for src, targets in refs.items():
            a = next((c for c in children if is_within(src, c)), None)
            if a is None:
                continue
            for t in targets:
                b = next((c for c in children if is_within(t, c)), None)
                if b is not None and b != a:
                    edges[a].add(b)
        for comp in sccs(children, edges):
            if len(comp) > 1:
                cycles.append((parent, comp, edges))
    for parent, comp, edges in cycles:
        name = "::".join(parent) or "crate"
        print(f"cycle under {name}:")
        for a in sorted(comp):
            for b in sorted(edges[a] & set(comp)):
                print(f"  {'::'.join(a)} -> {'::'.join(b)}")
    print(
        f"{len(crate.files)} files, {sum(map(len, refs.values()))} file-to-module references, "
        f"{levels} modules with two or more children checked: {len(cycles)} cycle(s)"
    )
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
