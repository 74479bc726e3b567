"""Liveness in one home: run leases (heartbeats), the check that declares runs dead, the
release of a dead run's jobs, the never-started rule.
"""
