#!/usr/bin/env python3
"""Check the docs against the tree: every relative link (and #anchor) in
README.md and docs/*.md resolves, and every path the README's Layout section
names exists (as a file, `name.rs`, or a folder `name/`).
Usage: check-docs.py [REPO_ROOT]. Anchors use GitHub's heading slugs."""
import glob, os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
files = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))

def slugs(path):
    out, seen = set(), {}
    in_code = False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))
        s = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out

bad = 0
for f in files:
    text = open(f, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)       # no links inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)                    # nor inside code spans
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):                    # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        if not os.path.exists(dest):
            print(f"{os.path.relpath(f, root)}: missing file {target}"); bad += 1; continue
        if anchor and dest.endswith(".md") and anchor not in slugs(dest):
            print(f"{os.path.relpath(f, root)}: missing anchor {target}"); bad += 1
def layout_paths(readme):
    """(parent folder, name) for each entry of the Layout section's tree."""
    text = open(readme, encoding="utf-8").read()
    m = re.search(r"^## Layout\n+```\n(.*?)```", text, flags=re.S | re.M)
    if not m:
        return None
    stack = []  # (indent, folder)
    for line in m.group(1).splitlines():
        if not line.strip() or not re.match(r"^\s*[\w./*-]+", line):
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        if name.startswith("tests/*") or "*" in name:
            continue
        # Continuation lines of a description are indented far to the right.
        if indent > 8:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        yield parent, name
        if name.endswith("/"):
            stack.append((indent, parent + name))

missing = 0
entries = layout_paths(os.path.join(root, "README.md"))
if entries is None:
    print("README.md: no Layout section"); missing += 1
else:
    for parent, name in entries:
        p = os.path.join(root, parent, name.rstrip("/"))
        if not (os.path.exists(p) or os.path.exists(p + ".rs") or os.path.isdir(p)):
            print(f"README.md Layout: {parent}{name} does not exist"); missing += 1
print(f"{len(files)} files checked, {bad} broken links, {missing} missing layout paths")
bad += missing
sys.exit(1 if bad else 0)
