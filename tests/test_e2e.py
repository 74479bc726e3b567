"""End to end, the way a deployment runs it: the code location served by its own gRPC code
server (`dagster api grpc`), dagster-daemon and dagster-webserver reaching it through a
`grpc_server` workspace, each in its own working directory, configured by environment
variables only, on a PostgreSQL-backed DAGSTER_HOME; the real stack, real pages.

One crawl of three collections plus malformed messages, then the same crawl again, then a
crawl with changed pages, then a burst during which the daemon is SIGKILLed and restarted.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import defaultdict
from itertools import pairwise

import httpx
import pytest

from bench.dagster_graphql import launch_backfill, wait_for_backfill
from rag_pipeline.ledger import JobLedger
from rag_pipeline.local.corpus import pages as corpus_pages
from rag_pipeline.local.corpus import postgres_docs
from rag_pipeline.local.publishing import message_for
from tests.e2e_deployment import (
    CANARY_API_KEY,
    CANARY_GO_TOKEN,
    PAGES_PER_COLLECTION,
    _graphql,
    _wait,
    accepted_statuses,
    bytea_values,
    crawl,
    resource_config,
    run_intervals,
    wait_terminal,
    workspace_docs,
)
from tests.go_side import delete_with_go, publish_with_go
from tests.helpers import (
    dead_letters,
    job_id_base,
    produce,
    raw,
)

pytestmark = pytest.mark.e2e


def test_crawls_flow_end_to_end_through_the_daemon(deployment, ledger_e2e):
    s = deployment.settings
    ledger = ledger_e2e
    docs = postgres_docs()
    unique = os.urandom(3).hex()
    names = [f"e2e{i}-{unique}" for i in range(3)]
    files = corpus_pages(docs, limit=3 * PAGES_PER_COLLECTION, offset=100)
    collections = {name: files[i * PAGES_PER_COLLECTION:(i + 1) * PAGES_PER_COLLECTION]
                   for i, name in enumerate(names)}
    base = job_id_base()

    # 1. A crawl of three collections and five malformed messages.
    messages, owner = crawl(collections, base, request_id=1)
    bad_base = base + 10_000
    good_json = json.loads(messages[0].value)
    bad = {
        bad_base: ("invalid_json", raw(b"x", b'{"job_id": %d, "url": ' % bad_base)),
        bad_base + 1: ("invalid_collection_id", message_for(
            {**good_json, "job_id": bad_base + 1, "collection_id": "x'; DROP TABLE jobs;--"})),
        bad_base + 2: ("unsupported_encoding", message_for(
            {**good_json, "job_id": bad_base + 2,
             "content": {**good_json["content"], "encoding": "zstd"}})),
        bad_base + 3: ("bad_base64", message_for(
            {**good_json, "job_id": bad_base + 3,
             "content": {**good_json["content"], "html": "%%%"}})),
    }
    produce(s, s.kafka_topic, [*messages, *(m for _, m in bad.values()),
                               raw(b"tombstone", None)])
    good_ids = list(owner)
    rows = wait_terminal(ledger, good_ids + list(bad))
    states = {r["job_id"]: r["state"] for r in rows}
    assert all(states[j] == "completed" for j in good_ids), {
        j: s for j, s in states.items() if j in owner and s != "completed"}
    assert all(states[j] == "failed" for j in bad)

    # Every good page is in its collection's workspace exactly once, and in no other.
    expected: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["job_id"] in owner:
            expected[owner[row["job_id"]]].add(ledger.job(row["job_id"])["doc_id"])
    in_lightrag = workspace_docs(ledger, names)
    assert {n: in_lightrag[n] for n in names} == dict(expected)
    assert sum(len(v) for v in in_lightrag.values()) == len(good_ids)

    # Every job has exactly one terminal status at the Go API (identical replays aside).
    statuses = accepted_statuses(s, set(good_ids) | set(bad))
    for job_id in good_ids:
        first = [c for c in statuses[job_id] if not c.get("replay")]
        assert [c["status"] for c in first] == ["completed"], (job_id, statuses[job_id])
    for job_id, (code, _) in bad.items():
        first = [c for c in statuses[job_id] if not c.get("replay")]
        assert len(first) == 1 and first[0]["status"] == "failed"
        assert first[0]["error_msg"].startswith(code)

    # Every bad message is in the DLQ with its reason (the tombstone too).
    letters = dead_letters(s, s.kafka_dlq_topic)
    by_job = {d["job_id"]: d["error_class"] for d in letters if d["job_id"]}
    assert {j: by_job.get(j) for j in bad} == {j: code for j, (code, _) in bad.items()}
    assert any(d["error_class"] == "empty_message" for d in letters)

    # At most one run per collection at a time, from Dagster's run records.
    for collection, spans in run_intervals(deployment.env).items():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end - 0.5, f"overlapping runs for {collection}"

    # The UI's GraphQL API lists the partitions and the materializations.
    nodes = _graphql(deployment.graphql, "{ assetNodes { assetKey { path } partitionKeys } }")
    partitions = {tuple(n["assetKey"]["path"]): set(n["partitionKeys"])
                  for n in nodes["assetNodes"]}
    assert set(names) <= partitions[("lightrag_documents",)]
    materializations = _graphql(deployment.graphql, """{ assetOrError(assetKey: {path:
        ["lightrag_documents"]}) { ... on Asset { assetMaterializations(limit: 100) {
        partition } } } }""")["assetOrError"]["assetMaterializations"]
    assert set(names) <= {m["partition"] for m in materializations}

    # 2. The same crawl again: nothing new is inserted, every job still completes.
    again, owner_again = crawl(collections, base + 20_000, request_id=2)
    produce(s, s.kafka_topic, again)
    rows = wait_terminal(ledger, list(owner_again))
    assert {r["state"] for r in rows} == {"completed"}
    outcomes = {ledger.job(r["job_id"])["outcome"] for r in rows}
    assert outcomes == {"unchanged"}
    assert workspace_docs(ledger, names) == in_lightrag

    # 3. A crawl with a few changed pages: exactly those are replaced.
    changed_names = [p.name for p in collections[names[0]][:3]]
    edits = {name: (docs / name).read_bytes().replace(
        b"</p>", f"</p><p>Revised paragraph {unique} {name}.</p>".encode(), 1)
        for name in changed_names}
    third, owner_third = crawl({names[0]: collections[names[0]]}, base + 30_000,
                               request_id=3, edit=edits)
    produce(s, s.kafka_topic, third)
    rows = wait_terminal(ledger, list(owner_third))
    outcome_of = {ledger.job(r["job_id"])["url"].rsplit("/", 1)[1]: ledger.job(r["job_id"])[
        "outcome"] for r in rows}
    assert {n for n, o in outcome_of.items() if o == "replaced"} == set(changed_names)
    assert {o for n, o in outcome_of.items() if n not in changed_names} == {"unchanged"}
    assert workspace_docs(ledger, names) == in_lightrag  # same ids, new content


def test_daemon_killed_mid_burst_ends_in_the_same_state(deployment, ledger_e2e):
    s = deployment.settings
    ledger = ledger_e2e
    docs = postgres_docs()
    unique = os.urandom(3).hex()
    files = corpus_pages(docs, limit=90, offset=500)
    collections = {f"kill{i}-{unique}": files[i * 30:(i + 1) * 30] for i in range(3)}
    messages, owner = crawl(collections, job_id_base(), request_id=4)
    produce(s, s.kafka_topic, messages[:45])
    # Kill as soon as the burst is being worked on: a run of it beating in the code server.
    live = _wait("a run of the burst", lambda: _live_runs(ledger, set(collections)), 300,
                 every=0.5)
    deployment.dagster.kill("daemon")  # SIGKILL, the daemon alone, as a crash would
    produce(s, s.kafka_topic, messages[45:])
    time.sleep(5)
    deployment.dagster.start_daemon()
    rows = wait_terminal(ledger, list(owner))
    assert {r["state"] for r in rows} == {"completed"}
    # The code server and its runs lived on without the daemon: the runs in flight at the
    # kill finished by themselves, none had to be declared dead and taken over.
    with ledger.pool.connection() as conn:
        ended = dict(conn.execute(
            "SELECT run_id, finished_at IS NOT NULL AND declared_dead_at IS NULL "
            "FROM rag_pipeline.runs WHERE run_id = ANY(%s)", [list(live)]).fetchall())
    assert ended == dict.fromkeys(live, True)
    expected: dict[str, set[str]] = defaultdict(set)
    for job_id, collection in owner.items():
        expected[collection].add(ledger.job(job_id)["doc_id"])
    assert workspace_docs(ledger, list(collections)) == dict(expected)
    statuses = accepted_statuses(s, set(owner))
    wrong = {j: statuses[j] for j in owner
             if [c["status"] for c in statuses[j] if not c.get("replay")] != ["completed"]}
    assert not wrong, wrong


def test_a_backfill_launched_as_the_ui_does_reindexes_two_collections(deployment, ledger_e2e):
    """`reindex_collection` backfilled over two collections through the webserver's GraphQL
    API (the UI's "Launch backfill"): the backfill daemon launches one run per collection,
    each processes its collection again from the ledger, and unchanged pages cost no model
    call and leave the workspaces as they were."""
    s, ledger = deployment.settings, ledger_e2e
    unique = os.urandom(3).hex()
    files = corpus_pages(postgres_docs(), limit=6, offset=700)
    collections = {f"fill{i}-{unique}": files[i * 3:(i + 1) * 3] for i in range(2)}
    messages, owner = crawl(collections, job_id_base(), request_id=5)
    produce(s, s.kafka_topic, messages)
    assert {r["state"] for r in wait_terminal(ledger, list(owner))} == {"completed"}
    before = workspace_docs(ledger, list(collections))
    chat_calls = httpx.get(s.dev_llm_url.removesuffix("/v1") + "/stats").json()["chat_calls"]
    launched_at = time.time()

    backfill = launch_backfill(deployment.graphql, "reindex_collection", list(collections))
    assert wait_for_backfill(deployment.graphql, backfill, 600) in ("COMPLETED",
                                                                    "COMPLETED_SUCCESS")
    runs = _graphql(deployment.graphql, '{ runsOrError(filter: {tags: [{key: '
                    '"dagster/backfill", value: "' + backfill + '"}]}) { ... on Runs { results '
                    '{ jobName status tags { key value } } } } }')["runsOrError"]["results"]
    partitions = sorted(t["value"] for r in runs for t in r["tags"]
                        if t["key"] == "dagster/partition")
    assert partitions == sorted(collections)
    assert {(r["jobName"], r["status"]) for r in runs} == {("reindex_collection", "SUCCESS")}
    # Every page was taken again (its job finished after the launch), found unchanged.
    rows = {j: ledger.job(j) for j in owner}
    assert all(r["finished_at"].timestamp() > launched_at for r in rows.values())
    assert {r["outcome"] for r in rows.values()} == {"unchanged"}
    assert httpx.get(s.dev_llm_url.removesuffix("/v1") + "/stats").json()["chat_calls"] \
        == chat_calls
    assert workspace_docs(ledger, list(collections)) == before


def _live_runs(ledger: JobLedger, collections: set[str]) -> set[str]:
    with ledger.pool.connection() as conn:
        return {run_id for (run_id,) in conn.execute(
            "SELECT run_id FROM rag_pipeline.runs WHERE collection_id = ANY(%s) AND "
            "finished_at IS NULL AND declared_dead_at IS NULL", [list(collections)])}


def test_no_secret_appears_in_logs_records_metadata_dlq_or_api_calls(deployment, ledger_e2e):
    """After a crawl of its own (and any above): the database password and the API key
    are nowhere the pipeline writes."""
    from rag_pipeline.local.stack.postgres import postgres_bin_dir

    s = deployment.settings
    messages, owner = crawl({f"sec-{os.urandom(3).hex()}": corpus_pages(
        postgres_docs(), limit=6, offset=700)}, job_id_base(), request_id=9)
    bad = message_for({**json.loads(messages[0].value), "job_id": max(owner) + 1,
                       "content": {"encoding": "zstd"}})
    produce(s, s.kafka_topic, [*messages, bad])
    rows = wait_terminal(ledger_e2e, [*owner, max(owner) + 1])
    assert sorted(r["state"] for r in rows) == ["completed"] * 6 + ["failed"]
    secrets = {"POSTGRES_PASSWORD": s.postgres_password.get_secret_value(),
               "OPENAI_API_KEY": CANARY_API_KEY, "GO_API_TOKEN": CANARY_GO_TOKEN}
    haystacks: dict[str, bytes] = {}
    for path in [*deployment.dagster.home.rglob("*"), *(s.stack_path / "logs").rglob("*")]:
        if path.is_file():
            haystacks[str(path)] = path.read_bytes()
    env = {**os.environ, "PGPASSWORD": secrets["POSTGRES_PASSWORD"]}
    for db in (deployment.env["DAGSTER_POSTGRES_DB"], s.postgres_db):
        dump = subprocess.run([str(postgres_bin_dir() / "pg_dump"), "-h", s.postgres_host,
                               "-p", str(s.postgres_port), "-U", s.postgres_user, db],
                              env=env, capture_output=True, timeout=600, check=True)
        haystacks[f"database {db} (run records, event log, asset metadata, ledger)"] = \
            dump.stdout
    for db in (deployment.env["DAGSTER_POSTGRES_DB"], s.postgres_db):
        haystacks.update(bytea_values(s, db))
    # Dagster's job snapshots were among them, decompressed.
    assert any(".snapshots.snapshot_body" in name and " 0 decompressed" not in name
               for name in haystacks), sorted(haystacks)
    haystacks["resource config in the UI"] = resource_config(deployment.graphql).encode()
    haystacks["dead letter topic"] = b"\n".join(
        json.dumps(d).encode() for d in dead_letters(s, s.kafka_dlq_topic))
    haystacks["Go API calls"] = httpx.get(f"{s.go_backend_url}/calls", timeout=60).content
    assert sum(len(h) for h in haystacks.values()) > 1_000_000  # we did look at something
    for name, secret in secrets.items():
        for where, content in haystacks.items():
            assert secret.encode() not in content, f"{name} found in {where}"


def test_a_collection_the_go_producer_publishes_reaches_the_go_receiver(
        deployment, ledger_e2e, go_bin, tmp_path):
    """Go at both ends: the Go producer publishes a folder of real pages for a new collection
    (a UUID, as the backend makes it) under an alias, then says the crawl is complete; the
    pipeline indexes it and records the alias and the end of the crawl; the Go handler,
    decoding each PATCH strictly with the Go types, has exactly one terminal status per job."""
    s = deployment.settings
    folder = tmp_path / "site"
    folder.mkdir()
    for page in corpus_pages(postgres_docs(), limit=12, offset=900):
        (folder / page.name).write_bytes(page.read_bytes())
    report = publish_with_go(go_bin, s.kafka_bootstrap_servers, s.kafka_topic, folder,
                             "https://go-producer.docs.test", job_id_base(),
                             alias="go-producer.docs.test")
    collection, job_ids = report["collection_id"], report["job_ids"]
    assert str(uuid.UUID(collection)) == collection and len(job_ids) == 12
    assert report["completed"]
    rows = wait_terminal(ledger_e2e, job_ids)
    assert {r["state"] for r in rows} == {"completed"}
    assert {r["collection_id"] for r in rows} == {collection}
    assert len(workspace_docs(ledger_e2e, [collection])[collection]) == 12
    [crawl] = _wait("the crawl said complete", lambda: [
        c for c in ledger_e2e.crawls(collection_id=collection) if c.completed], timeout=120)
    assert (crawl.alias, crawl.crawl_pages, crawl.received) == ("go-producer.docs.test", 12, 12)
    # Complete and done: released by the deployment's runs, the alias answers from it.
    _wait("the alias moved to the collection", lambda: ledger_e2e.alias_collection(
        "go-producer.docs.test") == collection, timeout=300)
    # The Go producer removes a page: its document leaves the workspace, its job is reported.
    gone = f"https://go-producer.docs.test/{sorted(folder.iterdir())[0].name}"
    deletion = delete_with_go(go_bin, s.kafka_bootstrap_servers, s.kafka_topic, collection,
                              [gone], job_id_base())
    [deleted] = wait_terminal(ledger_e2e, deletion["job_ids"])
    assert (deleted["state"], deleted["outcome"]) == ("completed", "deleted")
    assert len(workspace_docs(ledger_e2e, [collection])[collection]) == 11
    job_ids = [*job_ids, *deletion["job_ids"]]
    statuses = accepted_statuses(s, set(job_ids))
    for job_id in job_ids:
        assert [c["status"] for c in statuses[job_id] if not c["replay"]] == ["completed"]
    refused = [c for c in httpx.get(f"{s.go_backend_url}/calls", timeout=30).json()
               if c["answered"] != 200]
    assert refused == [], refused  # no body the Go types refuse, in the whole module
