"""Running the handlers on this machine: events, contexts and uploads shaped as AWS makes them."""
