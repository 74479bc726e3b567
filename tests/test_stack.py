"""The local stack: real Kafka, PostgreSQL + pgvector, the Go API and model stand-ins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import openai
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.local.stack.kafka import format_storage, random_cluster_id, server_properties
from rag_pipeline.settings import Settings

MIB = 1024 * 1024


def test_every_service_is_healthy(stack):
    rows = {row.name: row for row in stack.status()}
    assert set(rows) == {"postgres", "kafka", "go-api", "model"}
    assert all(row.healthy for row in rows.values()), rows


def test_topics_exist_with_the_designed_partitions_and_size_limit(stack, settings: Settings):
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[settings.kafka_topic].partitions) == 12
    assert {settings.kafka_dlq_topic, settings.kafka_results_topic} <= set(topics)
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource("topic", settings.kafka_topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert int(config["max.message.bytes"].value) >= 16 * MIB


def produce_and_consume(settings: Settings, value: bytes, key: bytes) -> bytes:
    producer = Producer(producer_config(KafkaOptions.from_settings(settings)))
    delivered = {}

    def on_delivery(err, msg):
        delivered["err"], delivered["msg"] = err, msg

    producer.produce(settings.kafka_topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert delivered["err"] is None
    sent = delivered["msg"]
    consumer = Consumer(consumer_config(KafkaOptions.from_settings(settings)))
    try:
        consumer.assign([TopicPartition(sent.topic(), sent.partition(), sent.offset())])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            return msg.value()
    finally:
        consumer.close()
    raise AssertionError("message not consumed back")


def test_message_round_trip(stack, settings, unique):
    value = json.dumps({"hello": unique}).encode()
    assert produce_and_consume(settings, value, unique.encode()) == value


def test_twelve_megabyte_message_round_trip(stack, settings, unique):
    value = (unique.encode() * (12 * MIB // len(unique) + 1))[: 12 * MIB]
    assert produce_and_consume(settings, value, unique.encode()) == value


def test_vector_extension_works(stack, settings):
    from pgvector.psycopg import register_vector

    with psycopg.connect(settings.postgres_conninfo(), **settings.postgres_kwargs(),
                         autocommit=True) as conn:
        register_vector(conn)
        conn.execute("CREATE TEMP TABLE items (id int, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        rows = conn.execute(
            "SELECT id FROM items ORDER BY embedding <=> '[1,0,0]' LIMIT 2").fetchall()
    assert [r[0] for r in rows] == [1, 3]


def test_dagster_database_exists(stack, settings):
    with psycopg.connect(settings.postgres_conninfo(settings.dagster_postgres_db),
                         **settings.postgres_kwargs()) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "dagster"


def test_go_stand_in_records_a_patch_and_validates_it(stack, settings, unique):
    base = settings.go_backend_url
    job_id = int(time.time() * 1000) % 10**9
    url = f"{base}/api/v1/indexing/jobs/{job_id}/status"
    ok = httpx.patch(url, json={"status": "completed"}, headers={"Idempotency-Key": unique})
    assert ok.status_code == 200
    bad = httpx.patch(url, json={"status": "done"})
    assert bad.status_code == 400 and "status must be one of" in bad.json()["error"]
    calls = httpx.get(f"{base}/calls", params={"job_id": job_id}).json()
    assert [(c["status"], c["answered"], c["idempotency_key"]) for c in calls] == [
        ("completed", 200, unique), ("done", 400, None)]
    assert httpx.get(f"{base}/jobs").json()[str(job_id)]["status"] == "completed"


def test_go_stand_in_can_be_told_to_fail(stack, settings):
    base = settings.go_backend_url
    httpx.post(f"{base}/control", json={"fail_status": 503, "fail_seconds": 30})
    try:
        answer = httpx.patch(f"{base}/api/v1/indexing/jobs/42/status", json={"status": "completed"})
        assert answer.status_code == 503
    finally:
        httpx.post(f"{base}/control", json={"fail_status": None})
    assert httpx.patch(f"{base}/api/v1/indexing/jobs/42/status",
                       json={"status": "completed"}).status_code == 200


@pytest.fixture
def model_client(stack, settings) -> openai.OpenAI:
    return openai.OpenAI(base_url=settings.dev_llm_url, api_key="not-needed", max_retries=0)


def test_stand_in_model_answers_the_real_openai_client(model_client, settings):
    stats_url = settings.dev_llm_url.removesuffix("/v1") + "/stats"
    before = httpx.get(stats_url).json()
    reply = model_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a Knowledge Graph Specialist responsible for "
                                          "extracting entities and relationships"},
            {"role": "user", "content": "---Input Text---\n```\nPostgreSQL stores Tables. "
                                        "PostgreSQL uses Indexes.\n```\n---Output---"},
        ],
    )
    content = reply.choices[0].message.content
    assert "entity<|#|>PostgreSQL<|#|>" in content and content.endswith("<|COMPLETE|>")
    assert "relation<|#|>" in content
    assert reply.usage.prompt_tokens > 0
    vectors = model_client.embeddings.create(model="text-embedding-3-small",
                                             input=["alpha beta", "alpha beta", "gamma"],
                                             dimensions=settings.embedding_dim)
    a, b, c = (v.embedding for v in vectors.data)
    assert len(a) == settings.embedding_dim and a == b and a != c
    after = httpx.get(stats_url).json()
    assert after["calls"].get("extract", 0) == before["calls"].get("extract", 0) + 1
    assert after["embedding_inputs"] == before["embedding_inputs"] + 3
    assert after["chat_peak_in_flight"] >= 1


def test_stand_in_model_injects_rate_limits(model_client, settings):
    control = settings.dev_llm_url.removesuffix("/v1") + "/control"
    httpx.post(control, json={"fail_rate": 1.0, "fail_status": 429})
    try:
        with pytest.raises(openai.RateLimitError):
            model_client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
    finally:
        httpx.post(control, json={"fail_rate": 0.0})


@pytest.mark.skipif(os.environ.get("RAG_TEST_EXTERNAL") == "1",
                    reason="uses the local stack, which RAG_TEST_EXTERNAL=1 replaces")
def test_stack_up_is_idempotent_and_status_reports_health(stack):
    cli = [sys.executable, "-m", "rag_pipeline.local.cli", "stack"]
    up = subprocess.run([*cli, "up"], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0
    for name in ("postgres", "kafka", "go-api", "model"):
        assert name in status.stdout
    assert "down" not in status.stdout


def test_port_in_use_gives_a_clear_message(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"STACK_DIR": str(tmp_path / "stack"), "POSTGRES_PORT": str(port)}
        result = subprocess.run([sys.executable, "-m", "rag_pipeline.local.cli", "stack", "up"],
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, **env})
    assert result.returncode == 2
    assert f"port 127.0.0.1:{port} is already in use" in result.stderr
    assert "POSTGRES_PORT" in result.stderr and "Traceback" not in result.stderr


def test_cluster_ids_never_start_with_a_dash():
    # 0xF8 makes the first base64 character "-": such draws are thrown away, as Kafka does.
    draws = iter([b"\xf8" + bytes(15), b"\xf8" * 16, bytes(16)])
    assert random_cluster_id(lambda: next(draws)) == "AAAAAAAAAAAAAAAAAAAAAA"
    assert not any(random_cluster_id().startswith("-") for _ in range(5000))


def test_storage_formats_with_any_cluster_id(stack, settings: Settings, tmp_path):
    # The failure a new user met 1 start in 64: an id starting with "-" taken for an option.
    libs = settings.stack_path / "kafka" / "libs"
    log_config = settings.stack_path / "kafka" / "log4j2.properties"
    for n, cluster_id in enumerate(["-dash" + "A" * 17, random_cluster_id()]):
        data_dir = tmp_path / f"data{n}"
        config = tmp_path / f"server{n}.properties"
        config.write_text(server_properties(settings, data_dir))
        format_storage(shutil.which("java") or "java", f"{libs}/*", log_config, config,
                       cluster_id)
        assert f"cluster.id={cluster_id}" in (data_dir / "meta.properties").read_text()
