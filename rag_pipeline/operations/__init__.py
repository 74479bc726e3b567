"""What an operator runs in a deployment: `rag-pipeline migrate`, `rag-pipeline kafka
ensure-topics`, `rag-pipeline api` and the commands over the ledger (inspect, query, outbox,
rebuild, drop). Production code: nothing here imports the local workshop
(`rag_pipeline.local`), which the image leaves out; when the workshop is installed, it adds
its own commands (stack, dev, publish, ...) to the same `rag-pipeline` group."""
