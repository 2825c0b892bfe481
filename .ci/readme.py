#!/usr/bin/env python3
"""Prints commands exactly as README.md writes them, so that CI runs what a
new user would type, and follows the README when it changes.

  readme.py serve            the first command of the first sh block (runs the service)
  readme.py test             the second command of that block (runs the tests)
  readme.py grpcurl WORD...  the commands of "Try it with grpcurl" that contain
                             every WORD, one per line (continuation lines joined)
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def sh_blocks(text):
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def commands(block):
    """Commands of a block: comments and blank lines dropped, lines ending in
    a backslash joined with the next."""
    out, current = [], ""
    for line in block.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        # A comment after the command is the shell's business, not ours.
        out.append(current)
        current = ""
    return out


def section(text, title):
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def main(argv):
    text = README.read_text()
    if len(argv) < 2:
        sys.exit(__doc__)
    first = commands(sh_blocks(text)[0])
    if argv[1] == "serve":
        print(first[0])
    elif argv[1] == "test":
        print(first[1])
    elif argv[1] == "grpcurl":
        words = argv[2:]
        found = [
            c
            for block in sh_blocks(section(text, "Try it with grpcurl"))
            for c in commands(block)
            if c.startswith("grpcurl") and all(w in c for w in words)
        ]
        if not found:
            sys.exit(f"no grpcurl command with {words} in README.md")
        print("\n".join(found))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
