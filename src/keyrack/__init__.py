"""Keyrack: API keys, throttling and the CRM API around them.

Importing the package loads only the SDK (``keyrack.Client``; its errors are in
``keyrack.client``); server code lives in submodules.
"""

from keyrack.client import Client

__all__ = ["Client", "__version__"]
__version__ = "0.1.0"
