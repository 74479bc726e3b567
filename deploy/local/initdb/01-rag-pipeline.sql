-- The databases rag-pipeline expects (the ledger schema is created by the project itself).
CREATE EXTENSION IF NOT EXISTS vector;
CREATE DATABASE dagster;
