"""The signal layer: audio decoding and the fingerprint pipeline on numpy arrays, no database."""
