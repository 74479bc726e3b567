"""Dagster's GraphQL API as the UI uses it: launch a backfill of a partitioned job over some
collections and follow it (the `reindex_order` fault scenario and the e2e backfill test).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

# What a backfill ends in (PartitionBackfill.status).
BACKFILL_ENDED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=60)
    answer.raise_for_status()
    body = answer.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors from {url}: {body['errors']}")
    return body["data"]


def launch_backfill(url: str, job: str, partitions: list[str]) -> str:
    """A backfill of `job` over these partitions (the UI's "Launch backfill" on the job's
    partitions page): its id."""
    [repo] = graphql(url, "{ repositoriesOrError { ... on RepositoryConnection { nodes "
                          "{ name location { name } } } } }")["repositoriesOrError"]["nodes"]
    launched = graphql(url, LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": {
        "selector": {"partitionSetName": f"{job}_partition_set", "repositorySelector": {
            "repositoryName": repo["name"],
            "repositoryLocationName": repo["location"]["name"]}},
        "partitionNames": partitions}})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the backfill of {job} was not launched: {launched}")
    return launched["backfillId"]


def backfill_status(url: str, backfill_id: str) -> str:
    found = graphql(url, "query($id: String!) { partitionBackfillOrError(backfillId: $id) { "
                         "__typename ... on PartitionBackfill { status } } }",
                    {"id": backfill_id})["partitionBackfillOrError"]
    return found.get("status", found["__typename"])


def wait_for_backfill(url: str, backfill_id: str, timeout_s: float) -> str:
    """Until the backfill ended: its final status."""
    deadline = time.monotonic() + timeout_s
    while (status := backfill_status(url, backfill_id)) not in BACKFILL_ENDED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} still {status} after {timeout_s:.0f} s")
        time.sleep(2)
    return status
