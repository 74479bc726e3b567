"""The contract of topic `indexing_jobs` (messages.py: pages, crawl completions and page
deletions), the rules of its fields (fields.py) and the records this project writes
(records.py)."""

from rag_pipeline.contract.fields import (
    ALIAS,
    COLLECTION_ID,
    MAX_ERROR_MSG,
    MAX_INT64,
    Rejection,
    clean_json,
    clean_str,
)
from rag_pipeline.contract.messages import (
    CRAWL_COMPLETED_KIND,
    PAGE_DELETED_KIND,
    PAGE_KIND,
    Content,
    ContentLimits,
    CrawlCompleted,
    CrawlMetadata,
    IndexingJob,
    Message,
    PageDeleted,
    check_content,
    parse_message,
)
from rag_pipeline.contract.records import (
    DeadLetter,
    JobResultEvent,
    ResultMetrics,
    StatusUpdate,
    json_schemas,
)

__all__ = [
    "ALIAS", "COLLECTION_ID", "CRAWL_COMPLETED_KIND", "MAX_ERROR_MSG", "MAX_INT64",
    "PAGE_DELETED_KIND", "PAGE_KIND", "Content", "ContentLimits", "CrawlCompleted",
    "CrawlMetadata", "DeadLetter", "IndexingJob", "JobResultEvent", "Message", "PageDeleted",
    "Rejection", "ResultMetrics", "StatusUpdate", "check_content", "clean_json", "clean_str",
    "json_schemas", "parse_message",
]
