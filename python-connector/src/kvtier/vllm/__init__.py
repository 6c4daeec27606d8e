"""kvtier's vLLM integration: the ``KVTierConnector`` (a vLLM V1 KV connector) and its helpers.

Importing this package does not import vLLM; :mod:`kvtier.vllm.connector` does.
"""
