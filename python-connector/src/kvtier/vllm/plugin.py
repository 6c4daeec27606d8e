"""vLLM plugin (entry point ``vllm.general_plugins``): registers ``KVTierConnector`` by name.

vLLM loads general plugins in every process it starts, so the name resolves in the scheduler and
in each worker. The connector module (and with it vLLM's connector API) is imported only when a
connector is created.
"""

from __future__ import annotations

CONNECTOR_NAME = "KVTierConnector"


def register() -> None:
    """Registers the connector with vLLM's factory. Idempotent."""
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    if CONNECTOR_NAME not in KVConnectorFactory._registry:
        KVConnectorFactory.register_connector(
            CONNECTOR_NAME, "kvtier.vllm.connector", "KVTierConnector"
        )
