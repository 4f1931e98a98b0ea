"""Emulated devices. Each sees offsets into its own range; side effects leave through callbacks."""
