"""bytes -> what happened (pure): what a ClientHello says about the client that sent it."""
