"""Azure AI Voice Live: typed events, session config, connection, loopback simulator."""
