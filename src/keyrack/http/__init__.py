"""The HTTP API adapter: the API app, the gateway in front of it, key parsing, problem
documents, dependencies, routes and schemas, and the server protocol `keyrack serve` runs."""
