"""The ledger's schema `rag_pipeline`: versioned migrations, applied once, in order.

- `kafka_offsets`: the consumer's source of truth (next offset per topic partition).
- `jobs`: one row per job_id, from staging to its terminal state (vocabulary.JobState).
- `documents`: what is in LightRAG, per (collection_id, doc_id), with its content hash.
- `outbox`: the status reports to deliver to the Go API (vocabulary.OutboxState).
- `runs`: heartbeats and outcomes of indexing runs; `collection_nudges`; `model_slots`.
- `state_counts` (+ `state_count_deltas`): rows per state of `jobs` and `outbox`, kept by
  triggers, so that counts cost the same at a million jobs as at none.
- `collections`: each collection's alias and crawl request, and the end of its crawl
  (schema_collections.py).

A migration is never edited once released: a change is a new migration.
"""

from __future__ import annotations

from rag_pipeline.ledger.schema_collections import COLLECTION_MIGRATIONS

# Each migration runs once, in order, inside one transaction, recorded in schema_migrations.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE rag_pipeline.kafka_offsets (
            topic text NOT NULL,
            partition integer NOT NULL,
            next_offset bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition)
        );

        CREATE TABLE rag_pipeline.jobs (
            job_id bigint PRIMARY KEY,
            seq bigserial UNIQUE,
            request_id bigint,
            project_id bigint,
            user_id text,
            collection_id text NOT NULL,
            url text NOT NULL,
            normalized_url text,
            doc_id text,
            title text,
            details jsonb NOT NULL DEFAULT '{}',
            message bytea,
            message_sha256 bytea,
            message_bytes integer,
            kafka_topic text,
            kafka_partition integer,
            kafka_offset bigint,
            state text NOT NULL CHECK (state IN
                ('queued', 'running', 'completed', 'failed', 'dead')),
            attempts integer NOT NULL DEFAULT 0,
            error_code text,
            last_error text,
            run_id text,
            clean_text text,
            text_source text,
            content_hash text,
            outcome text,
            duplicate_of text,
            metrics jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            UNIQUE (kafka_topic, kafka_partition, kafka_offset)
        );
        CREATE INDEX jobs_collection_state ON rag_pipeline.jobs (collection_id, state, seq);
        CREATE INDEX jobs_run ON rag_pipeline.jobs (run_id) WHERE run_id IS NOT NULL;
        CREATE INDEX jobs_active ON rag_pipeline.jobs (state, updated_at)
            WHERE state IN ('queued', 'running');
        CREATE INDEX jobs_request ON rag_pipeline.jobs (request_id);

        CREATE TABLE rag_pipeline.documents (
            collection_id text NOT NULL,
            doc_id text NOT NULL,
            url text NOT NULL,
            file_path text NOT NULL,
            content_hash text NOT NULL,
            job_id bigint NOT NULL,
            indexed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection_id, doc_id)
        );
        CREATE INDEX documents_content ON rag_pipeline.documents (collection_id, content_hash);

        CREATE TABLE rag_pipeline.callbacks (
            id bigserial PRIMARY KEY,
            job_id bigint NOT NULL,
            request_id bigint,
            status text NOT NULL CHECK (status IN ('completed', 'failed')),
            error_msg text,
            idempotency_key text NOT NULL UNIQUE,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'rejected')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error text,
            response_code integer,
            response_body text,
            result_event jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            delivered_at timestamptz
        );
        CREATE INDEX callbacks_due ON rag_pipeline.callbacks (next_attempt_at)
            WHERE state = 'pending';
        CREATE INDEX callbacks_job ON rag_pipeline.callbacks (job_id);
        """,
    ),
    (
        2,
        """
        -- Model request slots shared by every process (see model_slots.py).
        CREATE TABLE rag_pipeline.model_slots (
            kind text NOT NULL,
            slot integer NOT NULL,
            holder text,
            expires_at timestamptz,
            PRIMARY KEY (kind, slot)
        );
        CREATE FUNCTION rag_pipeline.release_model_slot(p_kind text, p_slot integer,
                                                        p_holder text)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE rag_pipeline.model_slots SET holder = NULL, expires_at = NULL
            WHERE kind = p_kind AND slot = p_slot AND holder = p_holder;
            PERFORM pg_notify('rag_pipeline_model_slots', p_kind);
        END $$;
        """,
    ),
    (
        3,
        """
        -- Result events for topic indexing_job_results (PUBLISH_RESULTS), from the outbox.
        ALTER TABLE rag_pipeline.callbacks ADD COLUMN result_published boolean
            NOT NULL DEFAULT false;
        -- Indexing runs: a heartbeat while they work (reconciliation reads it) and the
        -- run-level outcome recorded by the run's hooks.
        CREATE TABLE rag_pipeline.runs (
            run_id text PRIMARY KEY,
            collection_id text NOT NULL,
            beat_at timestamptz NOT NULL DEFAULT now(),
            outcome text,
            finished_at timestamptz
        );
        -- Bumped by reconciliation for a collection whose queued jobs no run takes; part of
        -- the sensor's run_key, so that a new run is requested.
        CREATE TABLE rag_pipeline.collection_nudges (
            collection_id text PRIMARY KEY,
            nudge integer NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        4,
        """
        -- A message is mostly base64 of gzip: PostgreSQL's pglz cannot shrink it and trying
        -- cost most of a staging tick. Stored out of line, uncompressed.
        ALTER TABLE rag_pipeline.jobs ALTER COLUMN message SET STORAGE EXTERNAL;
        """,
    ),
    (
        5,
        """
        -- One name for the outbox of status reports, everywhere (code, table, docs).
        ALTER TABLE rag_pipeline.callbacks RENAME TO outbox;
        ALTER SEQUENCE rag_pipeline.callbacks_id_seq RENAME TO outbox_id_seq;
        ALTER INDEX rag_pipeline.callbacks_pkey RENAME TO outbox_pkey;
        ALTER INDEX rag_pipeline.callbacks_due RENAME TO outbox_due;
        ALTER INDEX rag_pipeline.callbacks_job RENAME TO outbox_job;
        ALTER INDEX rag_pipeline.callbacks_idempotency_key_key
            RENAME TO outbox_idempotency_key_key;
        """,
    ),
    (
        6,
        """
        -- Counters that only grow, written with what they count (ledger/counters.py);
        -- the metrics exporter reads them at scrape time.
        CREATE TABLE rag_pipeline.counters (
            name text NOT NULL,
            labels text NOT NULL DEFAULT '',
            value double precision NOT NULL DEFAULT 0,
            PRIMARY KEY (name, labels)
        );
        -- What was counted before the counters existed, so that totals start right.
        INSERT INTO rag_pipeline.counters (name, labels, value)
        SELECT 'jobs_finished', 'outcome=' || coalesce(outcome, '') || ',reason='
               || coalesce(split_part(error_code, ':', 1), '') || ',state=' || state, count(*)
        FROM rag_pipeline.jobs WHERE state IN ('completed', 'failed', 'dead')
        GROUP BY 2;
        INSERT INTO rag_pipeline.counters (name, labels, value)
        SELECT 'outbox_' || state, '', count(*) FROM rag_pipeline.outbox
        WHERE state IN ('delivered', 'rejected') GROUP BY 1;
        """,
    ),
    (
        7,
        """
        -- When the crawler produced each message (its Kafka timestamp): the start of the
        -- produce -> terminal status latency the metrics report.
        ALTER TABLE rag_pipeline.jobs ADD COLUMN produced_at timestamptz;
        """,
    ),
    (
        8,
        """
        -- Liveness (docs/design.md, invariant 9): a run declared dead by the liveness check
        -- can no longer beat or finish jobs; `process` names the PostgreSQL sessions of its
        -- process (their application_name), terminated when it is declared dead.
        ALTER TABLE rag_pipeline.runs ADD COLUMN declared_dead_at timestamptz,
            ADD COLUMN declared_dead_reason text, ADD COLUMN process text,
            ADD COLUMN started_at timestamptz NOT NULL DEFAULT now();
        CREATE INDEX runs_alive ON rag_pipeline.runs (beat_at)
            WHERE finished_at IS NULL AND declared_dead_at IS NULL;
        """,
    ),
    (
        9,
        """
        -- A run takes its collection's newly staged jobs while it runs (invariant 10,
        -- streaming runs), from its first beat until it clears the flag to end: the sensor
        -- requests no other run for the collection meanwhile.
        ALTER TABLE rag_pipeline.runs ADD COLUMN accepting boolean NOT NULL DEFAULT true;
        """,
    ),
    (
        10,
        """
        -- Retention (RETENTION_DAYS): when a finished job's message and cleaned text were
        -- dropped; the index finds what is left to prune without reading the history.
        ALTER TABLE rag_pipeline.jobs ADD COLUMN pruned_at timestamptz;
        CREATE INDEX jobs_unpruned ON rag_pipeline.jobs (finished_at)
            WHERE pruned_at IS NULL AND state IN ('completed', 'failed', 'dead');

        -- What periodic work reads, found without reading the history (a ledger of a
        -- million jobs costs a tick what an empty one does: docs/benchmarks.md, "Cost as the
        -- work grows").
        CREATE INDEX outbox_unpublished ON rag_pipeline.outbox (id) WHERE NOT result_published;
        CREATE INDEX outbox_rejected ON rag_pipeline.outbox (id) WHERE state = 'rejected';
        CREATE INDEX runs_collection ON rag_pipeline.runs (collection_id, finished_at);

        -- State counts: rows per state of `jobs` (per collection, and '' for all) and of
        -- `outbox` (''), kept as rows change. Triggers append deltas (no row is updated in
        -- place, so concurrent writers never wait on one another); fold_state_counts() adds
        -- them into state_counts. A count is state_counts plus the deltas not yet folded.
        CREATE TABLE rag_pipeline.state_counts (
            tbl text NOT NULL,
            scope text NOT NULL,
            state text NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (tbl, scope, state)
        );
        CREATE TABLE rag_pipeline.state_count_deltas (
            tbl text NOT NULL,
            scope text NOT NULL,
            state text NOT NULL,
            n bigint NOT NULL
        );
        CREATE FUNCTION rag_pipeline.count_job_state() RETURNS trigger LANGUAGE plpgsql
        AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                INSERT INTO rag_pipeline.state_count_deltas
                VALUES ('jobs', OLD.collection_id, OLD.state, -1);
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO rag_pipeline.state_count_deltas
                VALUES ('jobs', NEW.collection_id, NEW.state, 1);
            END IF;
            RETURN NULL;
        END $$;
        CREATE FUNCTION rag_pipeline.count_outbox_state() RETURNS trigger LANGUAGE plpgsql
        AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                INSERT INTO rag_pipeline.state_count_deltas
                VALUES ('outbox', '', OLD.state, -1);
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO rag_pipeline.state_count_deltas
                VALUES ('outbox', '', NEW.state, 1);
            END IF;
            RETURN NULL;
        END $$;
        CREATE FUNCTION rag_pipeline.forget_state_counts() RETURNS trigger LANGUAGE plpgsql
        AS $$
        BEGIN
            DELETE FROM rag_pipeline.state_counts WHERE tbl = TG_TABLE_NAME;
            DELETE FROM rag_pipeline.state_count_deltas WHERE tbl = TG_TABLE_NAME;
            RETURN NULL;
        END $$;
        CREATE FUNCTION rag_pipeline.fold_state_counts() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            folded bigint;
        BEGIN
            -- One folder at a time (the others leave the deltas to it).
            IF NOT pg_try_advisory_xact_lock(hashtext('rag_pipeline:fold_state_counts')) THEN
                RETURN 0;
            END IF;
            WITH taken AS (
                DELETE FROM rag_pipeline.state_count_deltas RETURNING tbl, scope, state, n
            ), summed AS (
                SELECT tbl, scope, state, n FROM taken
                UNION ALL SELECT tbl, '', state, n FROM taken WHERE scope <> ''
            )
            INSERT INTO rag_pipeline.state_counts (tbl, scope, state, n)
            SELECT tbl, scope, state, sum(n) FROM summed GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (tbl, scope, state)
            DO UPDATE SET n = rag_pipeline.state_counts.n + EXCLUDED.n;
            GET DIAGNOSTICS folded = ROW_COUNT;
            RETURN folded;
        END $$;
        -- Row triggers: an update that leaves the state as it was costs nothing.
        CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON rag_pipeline.jobs
            FOR EACH ROW EXECUTE FUNCTION rag_pipeline.count_job_state();
        CREATE TRIGGER jobs_counted_state AFTER UPDATE OF state ON rag_pipeline.jobs
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION rag_pipeline.count_job_state();
        CREATE TRIGGER jobs_counted_truncate AFTER TRUNCATE ON rag_pipeline.jobs
            FOR EACH STATEMENT EXECUTE FUNCTION rag_pipeline.forget_state_counts();
        -- Row triggers: an update that leaves the state as it was costs nothing.
        CREATE TRIGGER outbox_counted AFTER INSERT OR DELETE ON rag_pipeline.outbox
            FOR EACH ROW EXECUTE FUNCTION rag_pipeline.count_outbox_state();
        CREATE TRIGGER outbox_counted_state AFTER UPDATE OF state ON rag_pipeline.outbox
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION rag_pipeline.count_outbox_state();
        CREATE TRIGGER outbox_counted_truncate AFTER TRUNCATE ON rag_pipeline.outbox
            FOR EACH STATEMENT EXECUTE FUNCTION rag_pipeline.forget_state_counts();
        -- What there was before the counts existed.
        INSERT INTO rag_pipeline.state_counts (tbl, scope, state, n)
        SELECT 'jobs', collection_id, state, count(*) FROM rag_pipeline.jobs
        WHERE collection_id <> '' GROUP BY 2, 3
        UNION ALL SELECT 'jobs', '', state, count(*) FROM rag_pipeline.jobs GROUP BY 3
        UNION ALL SELECT 'outbox', '', state, count(*) FROM rag_pipeline.outbox GROUP BY 3;
        """,
    ),
    (
        11,
        """
        -- One name per concept (vocabulary.py): `reason` is the reason code, `error_msg` the
        -- sentence sent to the Go API, `delivery_error` why a status could not be delivered,
        -- `declared_dead_msg` the sentence of a run's death (its code is the cause label).
        ALTER TABLE rag_pipeline.jobs RENAME COLUMN error_code TO reason;
        ALTER TABLE rag_pipeline.jobs RENAME COLUMN last_error TO error_msg;
        ALTER TABLE rag_pipeline.outbox RENAME COLUMN last_error TO delivery_error;
        ALTER TABLE rag_pipeline.runs RENAME COLUMN declared_dead_reason TO declared_dead_msg;
        """,
    ),
    (
        12,
        """
        -- A run declared dead is failed in Dagster afterwards (its run slot); recorded, so
        -- that a failure there is tried again (liveness/check.py).
        ALTER TABLE rag_pipeline.runs ADD COLUMN failed_in_dagster_at timestamptz;
        UPDATE rag_pipeline.runs SET failed_in_dagster_at = declared_dead_at
            WHERE declared_dead_at IS NOT NULL;
        """,
    ),
    *COLLECTION_MIGRATIONS,
]
