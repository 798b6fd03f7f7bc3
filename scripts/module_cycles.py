#!/usr/bin/env python3
"""Report import cycles between the top-level modules of each crate.

For every crate under crates/*/src this builds a graph whose nodes are the crate's
top-level modules (`src/foo.rs`, and `src/foo/**` counted as part of `foo`) and whose
edges are references from one module's code to another:

  * `crate::foo` anywhere in code, including grouped `use crate::{foo::X, bar}`;
  * `crate::Name` where the crate root re-exports `Name` with `pub use foo::Name`
    (the edge goes to `foo`, where `Name` lives);
  * `super::foo` (and `super::super::foo`, ...) once the `super`s reach the crate root.

Bare paths (`use foo::X`) name a sibling module only in the crate root, and the root is
not a node: it declares and re-exports every module, so it would close a cycle through
everything. Items defined in the root itself (an error type, say) are the floor every
module may stand on.

Test code is ignored: `#[cfg(test)]` modules (inline `mod tests { ... }` and file modules
declared `#[cfg(test)] mod x;` in the root) and `#[cfg(test)]` use items. Tests may reach
across modules freely; the rule is about the library's own layering. Comments and string
literals are ignored too.

Exits 1 and prints each cycle, with the lines that make it, if any crate has one.
Usage: scripts/module_cycles.py [workspace root, default: this script's parent's parent]
"""

import os
import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(src):
    """Blank out comments, string and char literals, keeping newlines (and so line numbers)."""
    out = []
    i, n = 0, len(src)

    def blank(text):
        return "".join("\n" if c == "\n" else " " for c in text)

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        elif re.match(r'b?r#*"', src[i:i + 40]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'(b?r)(#*)"', src[i:])
            close = '"' + m.group(2)
            j = src.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(blank(src[i:j]))
            i = j
        elif c == '"' or (c == "b" and src.startswith('b"', i) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(n, j + 1)
            out.append(blank(src[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", src[i:i + 16])
            if m:
                out.append(blank(m.group(0)))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code, open_at):
    """Index just past the `}` that closes the `{` at open_at."""
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


CFG_TEST = re.compile(r"#\[cfg\(test\)\]")


def strip_test_items(code):
    """Blank out items behind `#[cfg(test)]`: inline modules, `mod x;`, `use ...;`, fns."""
    out = code
    for m in reversed(list(CFG_TEST.finditer(code))):
        start = m.start()
        j = m.end()
        # Skip further attributes and whitespace to the item itself.
        while True:
            rest = code[j:]
            ws = len(rest) - len(rest.lstrip())
            j += ws
            if code.startswith("#[", j):
                j = matching_bracket(code, j + 1)
            else:
                break
        brace = code.find("{", j)
        semi = code.find(";", j)
        if semi >= 0 and (brace < 0 or semi < brace):
            end = semi + 1
        elif brace >= 0:
            end = matching_brace(code, brace)
        else:
            continue
        out = out[:start] + "".join("\n" if ch == "\n" else " " for ch in out[start:end]) + out[end:]
    return out


def matching_bracket(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "[":
            depth += 1
        elif code[j] == "]":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def inline_mod_spans(code):
    """(start, end, name) of every inline `mod name { ... }` in code."""
    spans = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        spans.append((m.end() - 1, matching_brace(code, m.end() - 1), m.group(1)))
    return spans


def module_path_at(file_path, spans, pos):
    """The module path (list of names below the crate root) that code at pos lives in."""
    path = list(file_path)
    for start, end, name in sorted(spans):
        if start <= pos < end:
            path.append(name)
    return path


def first_segments_of_group(code, open_at):
    """First path segments of each item in a `{a::B, c, d::{e, f}}` group."""
    end = matching_brace(code, open_at)
    inner = code[open_at + 1:end - 1]
    segs, depth, item = [], 0, ""
    for ch in inner + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            m = re.match(r"\s*(" + IDENT + r")", item)
            if m:
                segs.append(m.group(1))
            item = ""
        else:
            item += ch
    return segs


def root_reexports(code):
    """Map each name the crate root re-exports with `pub use` to the module it comes from."""
    names = {}
    for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+(?:crate::|self::)?(" + IDENT + r")::([^;]*);", code):
        module, rest = m.group(1), m.group(2).strip()
        if rest.startswith("{"):
            parts = re.findall(r"(" + IDENT + r")(?:\s+as\s+(" + IDENT + r"))?\s*(?:,|$)", rest[1:-1])
            for orig, alias in parts:
                names[alias or orig] = module
        else:
            last = re.findall(IDENT, rest)
            alias = re.search(r"\bas\s+(" + IDENT + r")\s*$", rest)
            if alias:
                names[alias.group(1)] = module
            elif last:
                names[last[-1]] = module
    return names


def crate_graph(src_dir):
    """(modules, edges) where edges[(a, b)] lists 'file:line' references from a to b."""
    src_dir = Path(src_dir)
    root_file = next((src_dir / f for f in ("lib.rs", "main.rs") if (src_dir / f).exists()), None)
    if root_file is None:
        return set(), {}
    root_code = strip_comments_and_strings(root_file.read_text())
    test_modules = set(re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", root_code))
    root_code = strip_test_items(root_code)
    declared = set(re.findall(r"\bmod\s+(" + IDENT + r")\s*;", root_code))
    modules = declared - test_modules
    reexports = {k: v for k, v in root_reexports(root_code).items() if v in modules}

    edges = {}
    for path in sorted(src_dir.rglob("*.rs")):
        rel = path.relative_to(src_dir)
        if rel == root_file.relative_to(src_dir):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        top = parts[0]
        if top not in modules:
            continue
        code = strip_test_items(strip_comments_and_strings(path.read_text()))
        spans = inline_mod_spans(code)

        def add(target, pos):
            if target in modules and target != top:
                line = code.count("\n", 0, pos) + 1
                edges.setdefault((top, target), []).append(f"{path}:{line}")

        def resolve_from_root(seg_pos_list):
            for seg, pos in seg_pos_list:
                add(reexports.get(seg, seg), pos)

        for m in re.finditer(r"(?<![\w$])crate::", code):
            after = m.end()
            g = re.match(r"\s*\{", code[after:])
            if g:
                brace = after + g.end() - 1
                resolve_from_root((s, m.start()) for s in first_segments_of_group(code, brace))
            else:
                s = re.match(IDENT, code[after:])
                if s:
                    resolve_from_root([(s.group(0), m.start())])

        for m in re.finditer(r"(?<![\w$:])((?:super::)+)", code):
            ups = m.group(1).count("super::")
            here = module_path_at(parts, spans, m.start())
            if ups < len(here):
                continue  # stays inside this top-level module
            after = m.end()
            g = re.match(r"\s*\{", code[after:])
            if g:
                brace = after + g.end() - 1
                resolve_from_root((s, m.start()) for s in first_segments_of_group(code, brace))
            else:
                s = re.match(IDENT, code[after:])
                if s:
                    resolve_from_root([(s.group(0), m.start())])
    return modules, edges


def strongly_connected(nodes, succ):
    """Tarjan's algorithm; returns the components with more than one node."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return comps


def one_cycle(comp, succ):
    """A shortest cycle through the component's first node, as a list of nodes."""
    start = comp[0]
    members = set(comp)
    frontier, parent = [start], {start: None}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(succ.get(v, ())):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    found = False
    for src_dir in sorted(root.glob("crates/*/src")):
        modules, edges = crate_graph(src_dir)
        succ = {}
        for a, b in edges:
            succ.setdefault(a, set()).add(b)
        for comp in strongly_connected(modules, succ):
            found = True
            cycle = one_cycle(comp, succ)
            crate = src_dir.parent.name
            print(f"{crate}: import cycle among {{{', '.join(comp)}}}: {' -> '.join(cycle)}")
            for a, b in zip(cycle, cycle[1:]):
                refs = edges[(a, b)]
                more = f" (+{len(refs) - 3} more)" if len(refs) > 3 else ""
                print(f"  {a} -> {b}: {', '.join(os.path.relpath(r, root) for r in refs[:3])}{more}")
    if found:
        return 1
    print("module_cycles: no import cycles between the top-level modules of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
