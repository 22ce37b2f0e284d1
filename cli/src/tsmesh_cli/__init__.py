"""tsmesh command line: talks to the gateway over HTTP and WebSocket, never to a database."""
