"""polls over HTTP: the REST views (apis), the vote's lean path (vote_intake), the audience's
pages, exports, the OpenAPI schema hooks (docs), rate limits and vote-intake metrics."""
