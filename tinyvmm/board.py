"""The composition root of the hardware: a VM, its memory per tinyvmm.layout, and its devices on the buses."""

from __future__ import annotations

import errno
import time

from . import layout
from .bus import Bus, Device, PioBus
from .console import Console
from .cpu import guest_cpuid
from .devices.cmos import Cmos
from .devices.debugcon import DebugConsole
from .devices.i8042 import I8042
from .devices.milestones import Milestone, MilestonePort
from .devices.misc import Port92, PostCode
from .devices.serial import Serial
from .errors import ConfigError
from .kvm import Kvm, KvmError, abi
from .kvm.slots import SlotMap
from .kvm.system import is_emulating_host
from .memory import GuestMemory
from .outcome import Outcome
from .pci.host import PciBuses, PciHost
from .pci.i440fx import I440fxHostBridge
from .pci.pam import ShadowRam, ShadowWindow
from .pci.piix import SCI_IRQ, Piix3IsaBridge, Piix4PowerManagement, PlainRegisters, ResetControl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .kvm.vcpu import Vcpu
    from .runner import Runner


class BoardConfig:
    """What a Board is built from. hide_xsave None: hide it where the host cannot run it.
    virtio_devices: virtio device models (tinyvmm.virtio), each put on PCI slot
    VIRTIO_FIRST_SLOT and up, in order. virtio_iothread: serve each device's queues on
    a thread of its own (tinyvmm.virtio.iothread) rather than on the vCPU thread. smp: the
    number of vCPUs. acpi: publish ACPI tables. pflash: the flash units' opened files
    (tinyvmm.devices.pflash.FlashFile, unit 0 first), `firmware` being unit 0's contents."""
    __slots__ = ("firmware", "ram_size", "serial", "debugcon", "hide_xsave", "virtio_devices",
                 "virtio_iothread", "smp", "acpi", "pflash")

    def __init__(self, firmware: bytes, ram_size: int = 256 * layout.MiB,
                 serial: Console | None = None, debugcon: Console | None = None,
                 hide_xsave: bool | None = None, virtio_devices=(), virtio_iothread: bool = False,
                 smp: int = 1, acpi: bool = True, pflash=()):
        self.pflash = list(pflash)
        self.firmware = firmware
        self.ram_size = ram_size
        self.serial = Console("serial") if serial is None else serial
        self.debugcon = Console("debugcon") if debugcon is None else debugcon
        self.hide_xsave = hide_xsave
        self.virtio_devices = list(virtio_devices)
        self.virtio_iothread = virtio_iothread
        self.smp = smp
        self.acpi = acpi


class Board:
    """One VM with config.smp vCPUs and its devices, ready to run from the reset vector (the
    hardware alone: tinyvmm.machine.Machine is what scripts and the command line drive).
    `vcpus[0]` (also `vcpu`) is the bootstrap processor; the others are APs, which the
    in-kernel LAPIC holds until the guest sends them INIT and SIPI."""

    def __init__(self, config: BoardConfig, tracer=None):
        layout.check(config.ram_size, len(config.firmware), flash=bool(config.pflash))
        self.config = config
        self.tracer = tracer
        self.stop_request: tuple[Outcome, str] | None = None
        self.first_run_ns: int | None = None
        self.milestones: list = []
        self.milestone_listeners: list = []   # called with each Milestone as it is written
        self.virtio: list = []
        self.iothreads: list = []
        self.pflash: list = []              # the flash units' devices, unit 0 first
        # The Runner driving this machine, attached by whoever runs it for the run's length:
        # stop_from_thread kicks the vCPU through it.
        self.runner: Runner | None = None
        self.vcpus: list[Vcpu] = []
        self.kvm = Kvm()
        try:
            check_vcpu_limit(self.kvm, config.smp)
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        config = self.config
        self.vm = vm = self.kvm.create_vm()
        # Both must be placed before the first vCPU exists, outside every memory slot.
        vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_START)
        vm.set_tss_addr(layout.KVM_TSS_START)

        self.pio = PioBus()
        self.mmio = Bus("mmio")
        self.memory = GuestMemory.for_layout(config.ram_size, config.firmware)
        self.slots = SlotMap(vm)
        self.slots.sync(0, 1 << 64, [(gpa, size, self.memory.host_address(gpa), not writable)
                                     for gpa, size, writable in self.memory.regions])
        if config.pflash:
            self._add_pflash(config.pflash)
        # Irqchip and PIT after the memory slots: the first slot set once an irqchip exists
        # waits milliseconds in the kernel (measured: 4-12 ms, against 0.5 ms for all five).
        vm.create_irqchip()
        vm.create_pit2()

        if self.tracer:
            self.pio.observer = lambda *a: self.tracer.unclaimed("pio", *a)
            self.mmio.observer = lambda *a: self.tracer.unclaimed("mmio", *a)

        config.serial.on_expect = lambda: self.request_stop(Outcome.EXPECTED, "expected output seen")
        config.debugcon.on_expect = config.serial.on_expect
        for console in (config.serial, config.debugcon):
            console.on_closed = self._closed_handler(console)
        self.serial = Serial(out=config.serial.write,
                             irq=lambda level: vm.irq_line(layout.COM1_IRQ, level))
        self.debugcon = DebugConsole(out=config.debugcon.write, present=config.debugcon.connected)
        self.i8042 = I8042(on_reset=lambda: self.request_stop(Outcome.RESET, "keyboard controller reset"))
        self.port92 = Port92(on_reset=lambda: self.request_stop(Outcome.RESET, "port 0x92 fast reset"))
        self.post = PostCode()
        self.cmos = Cmos(config.ram_size, cpus=config.smp)
        if self.tracer:
            self.milestone_listeners.append(self.tracer.milestone)
        self.add_pio("com1", self.serial)
        self.add_pio("debugcon", self.debugcon)
        self.add_pio("debugexit", self.debugcon)
        self.add_pio("i8042", self.i8042)
        self.add_pio("port92", self.port92)
        self.add_pio("post", self.post)
        self.add_pio("cmos", self.cmos)
        self._build_chipset()
        for name in ("milestone_linux", "milestone_fw"):
            port = layout.PORTS[name][0]
            self.add_pio(name, MilestonePort(port, self.milestones, self._on_milestone))

        hide = is_emulating_host() if config.hide_xsave is None else config.hide_xsave
        supported = self.kvm.supported_cpuid()
        for vcpu_id in range(config.smp):       # the vCPU id is the LAPIC's APIC ID
            vcpu = vm.create_vcpu(vcpu_id)
            self.vcpus.append(vcpu)
            vcpu.set_cpuid(guest_cpuid(supported, hide_xsave=hide, apic_id=vcpu_id, cpus=config.smp))
        self.vcpu = self.vcpus[0]

    def _build_chipset(self) -> None:
        """QEMU's `pc` chipset as firmware sees it: i440FX with PAM shadow RAM, PIIX3, and with
        ACPI the PIIX4 PM function and its GPE0 block (QEMU's acpi=off leaves them out too, so
        firmware builds no ACPI tables of its own)."""
        config, vm = self.config, self.vm
        self.shadow = ShadowRam(self.memory, self.memory.ram, self.memory.rom, self.slots, self.tracer,
                                strict_read_only=not is_emulating_host())
        self.mmio.register(layout.SHADOW_START, layout.SHADOW_END - layout.SHADOW_START,
                           ShadowWindow(self.memory))
        self.pci = PciHost(PciBuses(self.pio, self.mmio, self.memory, self.tracer))
        self.pci.add(I440fxHostBridge(config.ram_size, self.shadow), slot=0)
        self.isa_bridge = self.pci.add(Piix3IsaBridge(), slot=1)
        self.power_management: Piix4PowerManagement | None = None
        if config.acpi:
            self.power_management = self.pci.add(Piix4PowerManagement(
                on_poweroff=lambda: self.request_stop(Outcome.POWEROFF, "ACPI power off (PM1a_CNT)"),
                set_sci=lambda level: vm.irq_line(SCI_IRQ, level)), slot=1, number=3)
            self.add_pio("acpi_gpe0", PlainRegisters("acpi-gpe0", 4, write_one_to_clear=2))
        self.pci.reset_control = ResetControl(
            on_reset=lambda: self.request_stop(Outcome.RESET, "reset control register 0xcf9"))
        self.add_pio("pci_config", self.pci)
        self.add_pio("apm", PlainRegisters("apm", 2))
        if config.virtio_devices:
            self._add_virtio(config.virtio_devices, config.virtio_iothread)

    def _add_pflash(self, files) -> None:
        """The flash units below 4 GiB (QEMU's pc_sysfw): unit 0 is the firmware region the
        layout maps (ending at 4 GiB, its last 128 KiB also below 1 MiB), unit 1 ends where unit
        0 begins. Each is a read-only memory slot while in read-array mode, and MMIO (its
        device on self.mmio) otherwise; writes always exit to the device."""
        import mmap
        import sys

        from .devices.pflash import Pflash
        from .memory import buffer_address
        top = layout.FOUR_GIB
        for flash in files:
            size = len(flash.data)
            base = top - size
            if flash.unit == 0:
                assert self.memory.rom is not None          # the layout mapped it already
                storage = memoryview(self.memory.rom)
            else:
                backing = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                    mmap.PROT_READ | mmap.PROT_WRITE)
                backing[:] = flash.data
                storage = memoryview(backing)
                self.memory.replace(base, top, [(base, size, storage, None)])
                self.slots.sync(base, top, [(base, size, buffer_address(storage), True)])
            slot = [(base, size, buffer_address(storage), True)]

            def on_array(mapped: bool, base=base, top=top, slot=slot) -> None:
                self.slots.sync(base, top, slot if mapped else [])
            device = Pflash(storage, read_only=flash.read_only, fd=flash.fd,
                            name=f"pflash{flash.unit}", on_array=on_array,
                            warn=lambda text: print(f"tinyvmm: warning: {text}", file=sys.stderr))
            self.mmio.register(base, size, device)
            self.pflash.append(device)
            top = base

    def _add_virtio(self, models, iothread: bool) -> None:
        """The virtio-pci devices, from PCI slot VIRTIO_FIRST_SLOT up; with `iothread`, each
        served by an IoThread, else on the vCPU thread with INTx through KVM_IRQ_LINE."""
        from .virtio.iothread import IoThread, missing_capabilities
        from .virtio.pci import VirtioPciDevice
        missing = missing_capabilities(self.vm) if iothread else []
        if missing:
            raise KvmError(errno.ENOTSUP, f"the virtio I/O thread needs {', '.join(missing)}")
        for i, model in enumerate(models):
            slot = layout.VIRTIO_FIRST_SLOT + i
            device = VirtioPciDevice(model, self.memory, name=f"{model.name}{i}")
            if iothread:
                thread = IoThread(device, self.vm, lambda slot=slot: self.isa_bridge.irq_for(slot, 1),
                                  on_crash=lambda message: self.stop_from_thread(Outcome.CRASH, message))
                self.iothreads.append(thread)
                thread.start()
            else:
                device.set_irq = self._intx_line(slot)
            self.virtio.append(self.pci.add(device, slot=slot))

    def _intx_line(self, slot: int):
        """set_irq(level) for INTA# of `slot`: the ISA IRQ the PIIX3 routes it to now (none
        while the firmware has not routed it); a line is lowered where it was raised."""
        raised: list[int | None] = [None]

        def set_irq(level: bool) -> None:
            irq = self.isa_bridge.irq_for(slot, 1) if level else None
            if raised[0] is not None and raised[0] != irq:
                self.vm.irq_line(raised[0], False)
            if irq is not None:
                self.vm.irq_line(irq, True)
            raised[0] = irq
        return set_irq

    def add_pio(self, name: str, device: Device) -> None:
        """Put a device on the port range tinyvmm.layout.PORTS names."""
        base, size = layout.PORTS[name]
        self.pio.register(base, size, device)

    def _on_milestone(self, milestone) -> None:
        for listener in self.milestone_listeners:
            listener(milestone)

    def mark_milestone(self, port_name: str, value: int) -> None:
        """Record a milestone the firmware did not write (boot.marks), unless it already
        wrote that value: timestamped now, logged and passed to listeners as if written."""
        port = layout.PORTS[port_name][0]
        if any(m.port == port and m.value == value for m in self.milestones):
            return
        milestone = Milestone(port, value, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        self.milestones.append(milestone)
        self._on_milestone(milestone)

    def stop_at_milestone(self, port_name: str, value: int, message: str) -> None:
        """End the run (status 0) when `value` is written to the milestone port so named."""
        port = layout.PORTS[port_name][0]

        def check(milestone) -> None:
            if milestone.port == port and milestone.value == value:
                self.request_stop(Outcome.EXPECTED, message)
        self.milestone_listeners.append(check)

    def _closed_handler(self, console: Console) -> Callable[[], None]:
        """What `console` calls when its output cannot be written: the run ends."""
        def closed() -> None:
            self.request_stop(Outcome.OUTPUT_CLOSED,
                              console.failed or f"the reader of the {console.name} output went away")
        return closed

    def request_stop(self, outcome: Outcome, message: str) -> None:
        """Ask the run loop to end after the current exit (the first request wins)."""
        if self.stop_request is None:
            self.stop_request = (outcome, message)

    def stop_from_thread(self, outcome: Outcome, message: str) -> None:
        """request_stop from a thread other than the vCPU's. With a runner attached the vCPU is
        also kicked out of KVM_RUN, so the run ends at once even if the guest never exits;
        without one, it ends when the run loop next looks at stop_request."""
        self.request_stop(outcome, message)
        if self.runner is not None and self.stop_request is not None:
            self.runner.stop_from_thread(*self.stop_request)

    def console_tails(self) -> dict[str, bytes]:
        return {"serial": bytes(self.config.serial.tail), "debug console": bytes(self.config.debugcon.tail)}

    def close(self) -> None:
        self.runner = None          # its signal handlers are gone: a kick now would kill us
        try:
            for thread in self.iothreads:       # while the VM they registered with is open
                thread.close()
        finally:
            for vcpu in self.vcpus:
                vcpu.close()
            vm = getattr(self, "vm", None)
            if vm is not None:
                vm.close()
            self.kvm.close()


def vcpu_limit(kvm: Kvm) -> int:
    """The most vCPUs a VM may have on this host: KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS,
    else 4 (the KVM API's rule for kernels that report neither)."""
    return kvm.check_extension(abi.KVM_CAP_MAX_VCPUS) or kvm.check_extension(abi.KVM_CAP_NR_VCPUS) or 4


def check_vcpu_limit(kvm: Kvm, count: int) -> None:
    """ConfigError, before anything is built, when the host cannot give `count` vCPUs."""
    limit = vcpu_limit(kvm)
    if count > limit:
        raise ConfigError(f"--smp {count}: this host's KVM allows at most {limit} vCPUs per VM")
    recommended = kvm.check_extension(abi.KVM_CAP_NR_VCPUS)
    if recommended and count > recommended:
        import sys
        print(f"tinyvmm: warning: --smp {count} is more vCPUs than this host's KVM recommends "
              f"({recommended}, its CPUs): they will share them", file=sys.stderr)
