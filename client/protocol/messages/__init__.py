"""Request and response schemas, one module per API family, transcribed from the protocol's
published message definitions. `client.protocol.apis` collects them by API key."""
