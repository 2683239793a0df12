"""Keyrack: API keys, throttling and the CRM API around them.

Importing the package loads only the SDK; server code lives in submodules.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
