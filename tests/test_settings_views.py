"""Every typed settings view (`rag_pipeline/settings/views.py`) reads only real settings,
and every resource passed as a view carries all of it: a misspelt name fails here (and in a
type checker), not in a run."""

from __future__ import annotations

from rag_pipeline.resources import (
    KafkaResource,
    LedgerResource,
    LightRAGResource,
    OutboxResource,
    ProcessingResource,
)
from rag_pipeline.settings import Settings
from rag_pipeline.settings.views import (
    VIEWS,
    DeliveryView,
    KafkaTopicsView,
    LightRAGView,
    LivenessView,
    PageView,
    PostgresView,
    view_fields,
)

# Which resource is handed to which view's consumers (resources/*.py).
RESOURCE_VIEWS = {
    KafkaResource: [KafkaTopicsView],
    ProcessingResource: [PageView, LivenessView],
    LedgerResource: [PostgresView],
    LightRAGResource: [LightRAGView],
    OutboxResource: [DeliveryView],
}


def test_every_view_reads_settings_that_exist():
    for view in VIEWS:
        fields = view_fields(view)
        assert fields, view.__name__
        assert fields <= set(Settings.model_fields), (view.__name__,
                                                      fields - set(Settings.model_fields))


def test_every_resource_carries_what_its_views_read():
    for resource, views in RESOURCE_VIEWS.items():
        for view in views:
            missing = view_fields(view) - set(resource.model_fields)
            assert not missing, f"{resource.__name__} lacks {sorted(missing)} of {view.__name__}"


def test_views_inherit_what_they_extend():
    assert view_fields(LightRAGView) >= view_fields(PostgresView) | {"llm_max_concurrency"}
    assert "kafka_bootstrap_servers" in view_fields(KafkaTopicsView)
