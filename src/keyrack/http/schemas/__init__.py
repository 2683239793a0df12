"""Request and response bodies of the public API (Pydantic v2), one module per resource."""
