"""Debugging a guest with gdb over the remote serial protocol (see options.attach_debug_tools)."""
