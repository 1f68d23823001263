"""Market data in: the shared-memory ring, venue normalizers, websocket feed, replay, SimExchange."""
