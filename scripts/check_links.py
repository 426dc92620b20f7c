#!/usr/bin/env python3
"""Checks the relative links of markdown files: every `[text](path)`, `[text](path#anchor)`,
`[text](#anchor)` and `[label]: path` must name a file or folder that exists, and an anchor
must be a heading of the linked markdown file (GitHub's slugs: lower case, punctuation dropped,
spaces to hyphens, -1, -2... for repeats) or an `<a id="...">` / `<a name="...">` in it.
Links inside code (fenced blocks, `inline code`) and web links (http:, https:, mailto:) are
not checked.

usage: scripts/check_links.py [FILE_OR_FOLDER ...]   (default: README.md docs)
Prints each broken link as FILE:LINE: LINK (why) and exits 1 if there is one.
"""

import os
import re
import sys
import urllib.parse

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:id|name)\s*=\s*\"([^\"]+)\"", re.IGNORECASE)
FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def prose_lines(text):
    """(line number, line, line with inline code blanked out) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            blanked = re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m.group(0)), line)
            yield number, line, blanked


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    """Every anchor of the markdown file at `path`."""
    if path not in _anchors:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        found, seen = set(), {}
        for _, line, blanked in prose_lines(text):
            match = HEADING.match(line)
            if match:
                base = slug(match.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
            found.update(HTML_ANCHOR.findall(blanked))
        _anchors[path] = found
    return _anchors[path]


def check_link(source, link):
    """Why `link` in the markdown file `source` is broken, or None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.IGNORECASE) or link.startswith("//"):
        return None  # a web link (or mailto:)
    target, _, anchor = link.partition("#")
    target = urllib.parse.unquote(target)
    path = os.path.normpath(os.path.join(os.path.dirname(source), target)) if target else source
    if not os.path.exists(path):
        return f"no file {path}"
    if anchor:
        if not path.endswith(".md") or os.path.isdir(path):
            return f"an anchor into {path}, which is not a markdown file"
        if urllib.parse.unquote(anchor) not in anchors(path):
            return f"no heading or anchor #{anchor} in {path}"
    return None


def markdown_files(arguments):
    for argument in arguments:
        if os.path.isdir(argument):
            for root, dirs, files in os.walk(argument):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(".md"):
                        yield os.path.join(root, name)
        else:
            yield argument


def main(arguments):
    broken = checked = 0
    for source in markdown_files(arguments or ["README.md", "docs"]):
        with open(source, encoding="utf-8") as f:
            text = f.read()
        for number, _, line in prose_lines(text):
            links = INLINE.findall(line)
            reference = REFERENCE.match(line)
            if reference:
                links.append(reference.group(1))
            for link in links:
                checked += 1
                why = check_link(source, link)
                if why:
                    broken += 1
                    print(f"{source}:{number}: {link} ({why})")
    print(f"links: {checked} checked, {broken} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
