"""The LightRAG side: workspaces (one per collection), the model clients, model slots shared
across processes.
"""
