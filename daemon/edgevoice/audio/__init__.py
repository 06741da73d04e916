"""Audio: devices, capture, playback, resampling and codecs."""
