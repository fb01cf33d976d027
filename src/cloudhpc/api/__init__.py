"""The head node's REST API (FastAPI) with bearer tokens and roles, its cached view of the
cluster, the remote client, and the dashboard it serves."""
