"""The query service: LightRAG's answers over the indexed collections, with citations, for
HTTP clients (`http.py`) and MCP assistants (`mcp_tools.py`). The logic (`queries.py`,
`access.py`) knows neither."""
