"""mkdocs hook: publishes the repository's README.md as the site's tour page (tour.md).

README.md stays the one source of the tour; it lives outside docs/, so this hook adds it to the
site and rewrites its links: a link into docs/ becomes a link between pages, and a link to any
other file of the repository (examples/, benchmarks/README.md) becomes that path in code text,
since the site does not publish those files. The same rewrite applies to every page.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

TOUR_PAGE = "tour.md"
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", re.IGNORECASE)


def _repo_root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_files(files, config):
    """Adds README.md to the site as tour.md."""
    readme = _repo_root(config) / "README.md"
    files.append(File.generated(config, TOUR_PAGE, abs_src_path=str(readme)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Rewrites links that are relative to the page's file in the repository."""
    docs_dir = Path(config["docs_dir"]).resolve()
    root = _repo_root(config)
    if page.file.src_uri == TOUR_PAGE:
        source_dir = ""  # README.md sits at the repository root
    else:
        source_dir = posixpath.join(docs_dir.relative_to(root).as_posix(),
                                    posixpath.dirname(page.file.src_uri))
    page_dir = posixpath.dirname(page.file.src_uri)
    docs_prefix = docs_dir.relative_to(root).as_posix() + "/"

    def rewrite(match: re.Match) -> str:
        text, target = match["text"], match["target"]
        if _EXTERNAL.match(target):
            return match[0]
        path, _, anchor = target.partition("#")
        in_repo = posixpath.normpath(posixpath.join(source_dir, path))
        if in_repo.startswith(docs_prefix):
            new = posixpath.relpath(in_repo[len(docs_prefix):], page_dir or ".")
            return f"[{text}]({new}{'#' + anchor if anchor else ''})"
        shown = f"`{in_repo}`"
        return shown if text.strip("`") == in_repo else f"{text} ({shown} in the repository)"

    return _LINK.sub(rewrite, markdown)
