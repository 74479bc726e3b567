"""Screenshots of the running Dagster UI with headless Chromium (Debian's `chromium`).

    make screenshots        # with `make up` running and the demo crawl processed

Saves docs/images/{asset-graph,partitions,run-metadata-plots,crawl-requests}.png. Chromium
is installed with apt-get when missing (as root), started with the flags this machine's
closed network needs (no background networking, no component updates).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "asset-graph": "/asset-groups/indexing",
    "partitions": "/assets/lightrag_documents?view=partitions",
    "run-metadata-plots": "/assets/lightrag_documents?view=plots",
    "crawl-requests": "/assets/crawl_requests",
}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1600,1000", "--virtual-time-budget=20000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    print("chromium not found; installing Debian's chromium package ...")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium",
                    "fonts-dejavu-core"], check=True)
    return shutil.which("chromium") or sys.exit("chromium could not be installed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui", default="http://127.0.0.1:3000")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    try:
        httpx.get(f"{args.ui}/server_info", timeout=5).raise_for_status()
    except httpx.HTTPError:
        sys.exit(f"The Dagster UI is not answering at {args.ui}: start it with `make up`.")
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        target = args.out / f"{name}.png"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                            f"--screenshot={target}", f"{args.ui}{path}"],
                           check=True, capture_output=True, timeout=120)
        print(f"saved {target}")


if __name__ == "__main__":
    main()
