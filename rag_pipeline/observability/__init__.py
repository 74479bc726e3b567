"""What operators read: Prometheus metrics, the exporter, JSON logs, structured log events.
"""
