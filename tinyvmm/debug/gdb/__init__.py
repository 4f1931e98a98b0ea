"""Debugging a guest with gdb over the remote serial protocol (tinyvmm.debug.session starts it)."""
