"""Market data in: shared-memory ring, venue normalizers, websocket feed, replay, SimExchange."""
