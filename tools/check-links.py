#!/usr/bin/env python3
# check-links.py - every relative link in the given Markdown files leads somewhere.
#
#   tools/check-links.py README.md docs/*.md   ->   one line per broken link; exit 1 if any
#
# A link's file must exist (relative to the file that holds the link) and, when
# the link names an anchor in a Markdown file, that file must have a heading
# with that anchor, made the way GitHub makes them (lower case, punctuation
# dropped, spaces to hyphens, -1, -2 ... for repeats). Links to other sites
# (http:, https:, mailto:) are not followed: this checks our own tree only.
# Code blocks and `code spans` are skipped, since their brackets are not links.
# It never changes a file.
import os
import re
import sys

LINK = re.compile(r'\]\(([^)\s]+)\)')


def prose_lines(path):
    """The file's lines outside fenced code blocks, code spans removed."""
    fence = False
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.startswith('```'):
                fence = not fence
                continue
            if not fence:
                yield re.sub(r'`[^`]*`', '', line)


def anchors(path):
    """The anchors GitHub gives the headings of a Markdown file."""
    seen = {}
    fence = False
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.startswith('```'):
                fence = not fence
            if fence or not re.match(r'#{1,6} ', line):
                continue
            text = line.lstrip('#').strip()
            text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', text)  # a link: its text
            slug = re.sub(r'[^\w\- ]', '', text.lower()).replace(' ', '-')
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            yield slug if n == 0 else '%s-%d' % (slug, n)


def broken(path):
    """Yield a message for each relative link in path that leads nowhere."""
    for line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r'[a-z]+:', target):
                continue
            file, _, anchor = target.partition('#')
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            if not os.path.exists(dest):
                yield '%s: %s: no such file' % (path, target)
            elif anchor and dest.endswith('.md') and anchor not in set(anchors(dest)):
                yield '%s: %s: no such heading in %s' % (path, target, dest)


def main(paths):
    bad = [msg for p in paths for msg in broken(p)]
    for msg in bad:
        print(msg)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
