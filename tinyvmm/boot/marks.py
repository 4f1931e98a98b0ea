"""Boot milestones for firmware that writes none (SeaBIOS, qboot, QEMU's option ROMs).

tinyvmm's own BIOS and ROMs write the posting's boundaries to the milestone
ports. Other firmware is left unchanged and watched instead, as QEMU's trace
does it but closer to the event:

  do_boot (0xf4 = 5)       the first fw_cfg select of a key only a Linux loader
                           reads (fw_cfg.items.KERNEL_KEYS)
  kernel entry (0xf4 = 3)  the first instruction of the kernel's real-mode entry
                           (setup address + 0x200), or for an ELF kernel (0xf4 = 4)
                           its PVH entry, caught by an execution breakpoint in
                           debug register 0, so no guest code changes; under UEFI
                           firmware (OVMF), which starts a bzImage through its EFI stub
                           at an address of its choosing, the stub's first line on COM1
                           (EFI_STUB_LINE: it says where it found the initrd)

A milestone the firmware wrote itself wins: a synthesized one is dropped when
the same value was already seen. The breakpoint is armed only at do_boot and
removed when it fires: an emulating KVM (kvm_pvm) runs every guest instruction
about 5 % slower while guest debugging is on, which would otherwise be charged
to the BIOS phase.
"""

from .. import layout
from ..fw_cfg.items import KERNEL_KEYS
from ..kvm.debugregs import USE_HARDWARE_BREAKPOINTS, execution_breakpoint

TYPE_CHECKING = False           # True for type checkers only: no import cycle at run time
if TYPE_CHECKING:
    from ..board import Board


EFI_STUB_LINE = b"EFI stub: "


class BootMarks:
    """Watches one run of `board` for do_boot and the kernel's entry; `entry` is a linear
    address, and reaching it is recorded as `entry_milestone` on port 0xf4; `entry_line`, if
    given instead, is the kernel's first output on COM1, recorded the same way."""

    def __init__(self, board: "Board", runner, fw_cfg, entry: int | None,
                 entry_milestone: int = layout.MILESTONE_LINUX_START_BOOT,
                 entry_line: bytes | None = None):
        self.board = board
        self.runner = runner
        self.fw_cfg = fw_cfg
        self.entry = entry
        self.entry_milestone = entry_milestone
        fw_cfg.on_select = self._on_select
        if entry is not None:
            runner.guest_debug.claim("the boot's kernel-entry mark", self._on_debug_exit,
                                     breakpoints_only=True)
        if entry_line is not None:
            board.config.serial.watch(entry_line, self._on_entry_line)

    def _on_entry_line(self) -> None:
        self.board.mark_milestone("milestone_linux", self.entry_milestone)

    def _on_select(self, key: int) -> None:
        if key & 0x3FFF in KERNEL_KEYS:
            self.fw_cfg.on_select = None
            self.board.mark_milestone("milestone_linux", layout.MILESTONE_DO_BOOT)
            if self.entry is not None:
                self.runner.guest_debug.set(USE_HARDWARE_BREAKPOINTS,
                                            execution_breakpoint(self.entry))

    def _on_debug_exit(self, debug) -> None:
        if self.entry is None or debug.pc != self.entry:
            return None
        self.board.mark_milestone("milestone_linux", self.entry_milestone)
        self.runner.guest_debug.release()
        self.entry = None
        return None
