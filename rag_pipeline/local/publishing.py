"""Turning HTML files into `indexing_jobs` messages, as the Go crawler would publish them.

Used by `rag-pipeline publish` (try the system without the Go backend), the demo, tests
and benchmarks.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag_pipeline.contract import CRAWL_COMPLETED_KIND, PAGE_DELETED_KIND
from rag_pipeline.kafka_io import KafkaOptions, producer_config
from rag_pipeline.settings import Settings


def encode_html(html: bytes) -> str:
    """gzip + base64, the crawler's encoding of content.html."""
    return base64.b64encode(gzip.compress(html, compresslevel=6)).decode("ascii")


def build_message(
    *,
    job_id: int,
    collection_id: str,
    url: str,
    html: bytes,
    text: str = "",
    title: str = "",
    request_id: int = 1,
    project_id: int = 1,
    user_id: str = "local-user",
    depth: int = 0,
    parent_url: str | None = None,
    base_url: str | None = None,
    crawl_session_id: str = "local",
    discovered_at: str | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    return {
        **({"alias": alias} if alias else {}),
        "job_id": job_id,
        "request_id": request_id,
        "project_id": project_id,
        "user_id": user_id,
        "collection_id": collection_id,
        "url": url,
        "depth": depth,
        "parent_url": parent_url,
        "discovered_at": discovered_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "content": {
            "html": encode_html(html),
            "text": text,
            "title": title,
            "content_type": "text/html",
            "encoding": "gzip+base64",
        },
        "metadata": {"base_url": base_url or url, "crawl_session_id": crawl_session_id},
    }


def completion_message(*, collection_id: str, request_id: int, pages: int,
                       alias: str | None = None) -> dict[str, Any]:
    """The crawler's word that the request is complete: publish it after its pages."""
    return {"kind": CRAWL_COMPLETED_KIND, "request_id": request_id,
            "collection_id": collection_id, **({"alias": alias} if alias else {}),
            "pages": pages, "completed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}


def deletion_message(*, job_id: int, collection_id: str, url: str, request_id: int = 1,
                     alias: str | None = None) -> dict[str, Any]:
    """The removal of the page at `url` from the collection (a job: it gets a status)."""
    return {"kind": PAGE_DELETED_KIND, "job_id": job_id, "request_id": request_id,
            "collection_id": collection_id, **({"alias": alias} if alias else {}), "url": url}


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes
    value: bytes


def message_for(message: dict[str, Any]) -> OutgoingMessage:
    """Keyed by collection_id, so one collection's pages share a partition's order."""
    return OutgoingMessage(key=str(message.get("collection_id", "")).encode(),
                           value=json.dumps(message).encode())


def folder_messages(
    folder: Path,
    *,
    collection_id: str,
    base_url: str,
    first_job_id: int,
    request_id: int,
    pattern: str = "*.html",
    limit: int | None = None,
    alias: str | None = None,
) -> Iterator[dict[str, Any]]:
    """One message per HTML file of `folder` (sorted), url = base_url + relative path."""
    files = sorted(p for p in folder.rglob(pattern) if p.is_file())
    if limit is not None:
        files = files[:limit]
    base = base_url.rstrip("/")
    for offset, path in enumerate(files):
        relative = path.relative_to(folder).as_posix()
        yield build_message(
            job_id=first_job_id + offset,
            collection_id=collection_id,
            url=f"{base}/{relative}",
            html=path.read_bytes(),
            request_id=request_id,
            depth=relative.count("/") + 1,
            parent_url=base + "/",
            base_url=base + "/",
            alias=alias,
        )


def publish(settings: Settings, messages: Iterable[OutgoingMessage], topic: str | None = None,
            progress=None) -> int:
    """Produce messages and wait for every delivery; raise if any failed."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer(producer_config(KafkaOptions.from_settings(settings)))
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    started = time.monotonic()
    for message in messages:
        while True:
            try:
                producer.produce(topic or settings.kafka_topic, key=message.key,
                                 value=message.value, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.5)
            except KafkaException as exc:
                raise RuntimeError(f"Kafka refused the message: {exc}") from None
        count += 1
        producer.poll(0)
        if progress and count % 100 == 0:
            progress(count, time.monotonic() - started)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(
            f"{remaining} messages were not delivered to Kafka at "
            f"{settings.kafka_bootstrap_servers} within 60 s; is the broker up?"
        )
    if errors:
        raise RuntimeError(f"{len(errors)} messages failed delivery; first: {errors[0]}")
    return count
