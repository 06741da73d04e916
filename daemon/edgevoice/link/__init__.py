"""The Voice Live connection: a sans-I/O protocol side and a thin asyncio WebSocket client."""
