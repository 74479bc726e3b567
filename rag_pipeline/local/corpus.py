"""Real documentation pages for the demo, tests and benchmarks.

Debian's `postgresql-doc-15` package holds ~1,170 HTML pages of the PostgreSQL manual.
`postgres_docs()` fetches it once with `apt-get download` and unpacks it with `dpkg -x`
into a cache folder (no root needed for either).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGE = "postgresql-doc-15"
HTML_DIR = Path("usr/share/doc/postgresql-doc-15/html")


class CorpusUnavailable(Exception):
    pass


def default_cache() -> Path:
    return Path.home() / ".cache" / "rag-pipeline"


def postgres_docs(cache: Path | None = None) -> Path:
    """The folder of postgresql-doc-15's HTML pages, downloaded on first use."""
    root = (cache or default_cache()) / PACKAGE
    html = root / HTML_DIR
    if (root / ".complete").exists():
        return html
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise CorpusUnavailable(f"{tool} is not available: the {PACKAGE} corpus comes from "
                                    "Debian's packages")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True,
                                text=True, timeout=600)
        debs = list(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if result.returncode != 0 or not debs:
            raise CorpusUnavailable(
                f"apt-get download {PACKAGE} failed: {result.stderr.strip()[-500:]} "
                "(run `apt-get update` if the package index is stale)")
        subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True, timeout=600)
    (root / ".complete").write_text("ok\n")
    return html


def pages(folder: Path, limit: int | None = None, offset: int = 0) -> list[Path]:
    files = sorted(p for p in folder.glob("*.html") if p.is_file())
    return files[offset: None if limit is None else offset + limit]
