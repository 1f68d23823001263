"""One module per venue: Normalizer (raw bytes -> events), subscribe messages, sequence rules."""
