"""Screenshots of the running Dagster UI with headless Chromium (Debian's `chromium`).

    make screenshots        # with `make up` running and the demo crawl processed
    .venv/bin/python scripts/screenshots.py --prometheus http://127.0.0.1:9090
                            # also Prometheus's graph of pages indexed per second

Saves docs/images/{asset-graph,partitions,run-metadata-plots,crawl-requests}.png (the plots
are reached by a click, driven over Chromium's DevTools protocol by
scripts/click_and_capture.mjs with Node, skipped without Node). Chromium
is installed with apt-get when missing (as root), started with the flags this machine's
closed network needs (no background networking, no component updates).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "asset-graph": "/assets/lightrag_documents?view=lineage&lineageScope=upstream&lineageDepth=2",
    "partitions": "/assets/lightrag_documents?view=partitions&partition=demo-postgres-sql",
    "crawl-requests": "/assets/crawl_requests",
}
# Pages whose view is reached by clicking a button: (path, the button's label).
CLICKED = {
    "run-metadata-plots": ("/assets/lightrag_documents?view=overview",
                           "Plots"),
}
PAGES_PER_SECOND = 'sum(rate(rag_pipeline_jobs_finished_total{state="completed"}[1m]))'
DEBUG_PORT = 9333
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
    parser.add_argument("--prometheus", default=None,
                        help="also Prometheus's graph page of pages indexed per second")
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
    if CLICKED:
        capture_after_click(browser, args.ui, args.out)
    if args.prometheus:
        target = args.out / "prometheus-pages-per-second.png"
        query = urlencode({"g0.expr": PAGES_PER_SECOND, "g0.tab": "0", "g0.range_input": "15m",
                           "g0.stacked": "0"})
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                            f"--screenshot={target}", f"{args.prometheus}/graph?{query}"],
                           check=True, capture_output=True, timeout=120)
        print(f"saved {target}")


def capture_after_click(browser: str, ui: str, out: Path) -> None:
    """The CLICKED pages, through Chromium's DevTools protocol (driven by Node)."""
    node = shutil.which("node")
    if node is None:
        print(f"node not found: skipping {', '.join(CLICKED)}")
        return
    with tempfile.TemporaryDirectory() as profile:
        # Without --virtual-time-budget: the page runs in real time while it is driven.
        flags = [f for f in FLAGS if not f.startswith("--virtual-time-budget")]
        chrome = subprocess.Popen([browser, *flags,
                                   f"--remote-debugging-port={DEBUG_PORT}",
                                   f"--user-data-dir={profile}", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ws = None
            for _ in range(60):
                try:
                    ws = httpx.get(f"http://127.0.0.1:{DEBUG_PORT}/json/version",
                                   timeout=2).json()["webSocketDebuggerUrl"]
                    break
                except httpx.HTTPError:
                    time.sleep(0.5)
            if ws is None:
                sys.exit("Chromium's DevTools endpoint did not come up")
            for name, (path, label) in CLICKED.items():
                target = out / f"{name}.png"
                subprocess.run([node, "--experimental-websocket", "--no-warnings",
                                str(ROOT / "scripts" / "click_and_capture.mjs"), ws,
                                f"{ui}{path}", label, str(target)], check=True, timeout=120)
                print(f"saved {target}")
        finally:
            chrome.terminate()
            chrome.wait(timeout=30)


if __name__ == "__main__":
    main()
