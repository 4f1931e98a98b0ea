"""Booting Linux. One module a kernel format: bzimage (the x86 boot protocol's header) and elf
(a vmlinux and its PVH entry). How each boots: linux (a bzImage through fw_cfg, as QEMU's
-kernel), pvh (an ELF's hvm_start_info, and its fw_cfg items), direct (entering either without
firmware); payload chooses and checks; marks times firmware that writes no milestones."""
