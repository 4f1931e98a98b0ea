"""Serving a virtio-pci device's queues on a thread of its own, woken by KVM.

Each queue gets an eventfd that KVM signals itself when the guest writes the
queue's index (16 bits) to its notification address (KVM_IOEVENTFD): the vCPU
does not leave KVM_RUN for it. The registrations follow BAR4: they are made
when the BAR is mapped and removed when it moves or goes. Notifications that
still trap (another width, the PCI_CFG window) are passed to the thread too.

The interrupt goes back through an irqfd with a resample eventfd on the ISA IRQ
the PIIX3 routes INTA# to, checked at each interrupt (firmware reprograms the
PIRQ routes): a write to the irqfd raises the line and KVM holds it until the
guest's EOI, then lowers it and signals the resample eventfd, on which the
thread raises it again if ISR still holds a cause. Nothing lowers the line
before that EOI: a driver that clears ISR by polling it (SeaBIOS) leaves the
line raised, so the guest sees at most one spurious interrupt once it unmasks
the IRQ (a shared INTx handler reads ISR 0 and returns).

The thread and the vCPU thread take the device's lock around every access to
the device's state (VirtioPciDevice.lock).
"""

import os
import select
import threading
import traceback

from ..kvm import abi
from .pci import NOTIFY_OFF_MULTIPLIER, VirtioPciDevice

NOTIFY_WIDTH = 2            # bytes the driver writes to a notification address

REQUIRED_CAPS = (("KVM_CAP_IOEVENTFD", abi.KVM_CAP_IOEVENTFD), ("KVM_CAP_IRQFD", abi.KVM_CAP_IRQFD),
                 ("KVM_CAP_IRQFD_RESAMPLE", abi.KVM_CAP_IRQFD_RESAMPLE))


def missing_capabilities(vm) -> list[str]:
    """The KVM capabilities an IoThread needs that `vm` lacks, by name."""
    return [name for name, cap in REQUIRED_CAPS if not vm.check_extension(cap)]


class IoThread:
    """One thread serving `device` (a VirtioPciDevice): notifications arrive through
    ioeventfds registered with `vm` (a tinyvmm.kvm.Vm, or anything with its ioeventfd and
    irqfd methods), interrupts leave through an irqfd on `irq_for()` (the GSI pin A is
    routed to now, or None). `on_crash(message)` is called from the thread if serving
    raises (a bug in tinyvmm, not a guest error): the message holds the traceback, and the
    thread ends. Owns its eventfds until close(). start() runs it.
    """

    def __init__(self, device: VirtioPciDevice, vm, irq_for, on_crash):
        self.device = device
        self.vm = vm
        self.irq_for = irq_for
        self.on_crash = on_crash
        self.notify_area: int | None = None      # guest-physical, while registered
        self.gsi: int | None = None              # where the irqfd is attached
        self._fds: list[int] = []
        self.queue_fds = [self._new_fd() for _ in device.queues]
        self.stop_fd = self._new_fd()
        self.irq_fd = self._new_fd()
        self.resample_fd = self._new_fd()
        self._thread = threading.Thread(target=self._run, name=f"virtio-io {device.name}", daemon=True)
        device.set_irq = self.set_irq
        device.notifier = self

    def _new_fd(self) -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._fds.append(fd)
        return fd

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the vCPU thread's side (set_irq: either thread, under the device's lock) --
    def notify_area_moved(self, address: int | None) -> None:
        """Move the queues' ioeventfds to the notification area at `address` (None: remove)."""
        if address == self.notify_area:
            return
        if self.notify_area is not None:
            self._register(self.notify_area, deassign=True)
            self.notify_area = None
        if address is not None:
            self._register(address, deassign=False)
            self.notify_area = address

    def _register(self, area: int, deassign: bool) -> None:
        for index, fd in enumerate(self.queue_fds):
            self.vm.ioeventfd(fd, area + NOTIFY_OFF_MULTIPLIER * index, NOTIFY_WIDTH,
                              datamatch=index, deassign=deassign)

    def kick(self, index: int) -> None:
        """A notification of queue `index` that reached the vCPU thread: serve it here."""
        if index < len(self.queue_fds):
            os.eventfd_write(self.queue_fds[index], 1)

    def set_irq(self, level: bool) -> None:
        """The device's INTx level. Raising (re)attaches the irqfd where the line is routed
        now; lowering is left to the guest's EOI (see the module docstring)."""
        if not level:
            return
        gsi = self.irq_for()
        if gsi != self.gsi:
            self._detach_irq()
            if gsi is not None:
                self.vm.irqfd(self.irq_fd, gsi, resample_fd=self.resample_fd)
                self.gsi = gsi
        if self.gsi is not None:
            os.eventfd_write(self.irq_fd, 1)

    def _detach_irq(self) -> None:
        if self.gsi is not None:
            self.vm.irqfd(self.irq_fd, self.gsi, deassign=True)     # lowers a held line
            self.gsi = None

    # --- the thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:
            self.on_crash(f"virtio I/O thread of {self.device.name} failed:\n"
                          + traceback.format_exc().rstrip("\n"))

    def _serve(self) -> None:
        poller = select.poll()
        queues = {fd: index for index, fd in enumerate(self.queue_fds)}
        for fd in (self.stop_fd, self.resample_fd, *self.queue_fds):
            poller.register(fd, select.POLLIN)
        device = self.device
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if self.stop_fd in ready:
                return
            for fd in ready:
                os.eventfd_read(fd)
                if fd == self.resample_fd:
                    device.resample()
                else:
                    device.notify(queues[fd])

    def close(self) -> None:
        """Stop the thread, remove the KVM registrations (the VM must still be open) and
        close the eventfds. Idempotent."""
        if not self._fds:
            return
        if self._thread.is_alive():
            os.eventfd_write(self.stop_fd, 1)
            self._thread.join()
        with self.device.lock:
            try:
                self.notify_area_moved(None)
                self._detach_irq()
            finally:
                self.device.notifier = None
                self.device.set_irq = lambda level: None
                for fd in self._fds:
                    os.close(fd)
                self._fds = []
