"""The providers Keyrack syncs with: provider name → connector factory.

Each factory is called with the connection's ``credential``, an ``httpx.Client``, its
``base_url`` (None: the real service's), ``on_token`` and ``read_fields`` (see
``keyrack.integrations.connector.ConnectorFactory``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from keyrack.integrations.connector import ConnectorFactory
from keyrack.integrations.connectors.hubspot import HubSpotConnector
from keyrack.integrations.connectors.keyrack import KeyrackConnector
from keyrack.integrations.connectors.salesforce import SalesforceConnector
from keyrack.integrations.connectors.stripe import StripeConnector
from keyrack.integrations.connectors.webhook import WebhookConnector

CONNECTORS: Mapping[str, ConnectorFactory] = MappingProxyType(
    {
        "hubspot": HubSpotConnector,
        "keyrack": KeyrackConnector,
        "salesforce": SalesforceConnector,
        "stripe": StripeConnector,
        "webhook": WebhookConnector,
    }
)


def connector_for(provider: str) -> ConnectorFactory:
    try:
        return CONNECTORS[provider]
    except KeyError:
        raise ValueError(f"no connector for provider {provider!r}") from None
