"""Running the service: health, metrics, connection slots, rate limits, graceful stop, fault controls."""
