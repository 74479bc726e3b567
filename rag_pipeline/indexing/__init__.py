"""A run's pipeline: the run loop, pages, cleaning, the feed into LightRAG, what a page
becomes, the writer lock, the run's report.
"""
