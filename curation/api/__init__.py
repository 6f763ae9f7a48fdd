"""The REST API under /api/v1/: read dataset versions, request exports and download them with a token."""
