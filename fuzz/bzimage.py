"""Fuzz target: bzImage kernels through the loader (tinyvmm.boot): parsing, the boot plan, fw_cfg
publication and the writes into guest RAM. The first input byte picks the options
(common.boot_kernel), the rest is the file."""

from common import boot_kernel, main

if __name__ == "__main__":
    main(boot_kernel, "bzimage")
