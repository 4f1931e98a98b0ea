"""Booting Linux: the bzImage format (bzimage) and QEMU-style -kernel loading through fw_cfg (linux)."""
