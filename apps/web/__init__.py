"""A node's curation web app: REST API, accounts and TLS (the pages live in pages.py,
templates/ and static/). Start from `app.create_app`."""
