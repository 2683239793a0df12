"""The HTTP adapter: FastAPI app factory, authentication, problems, routes."""
