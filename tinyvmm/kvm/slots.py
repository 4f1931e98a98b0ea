"""KVM memory slots kept in step with a description of guest-physical memory.

KVM cannot change a slot's address, size or read-only flag in place; a slot
that must change is deleted and created anew. Only what changed is touched:
each slot update costs a KVM memslot generation, which is microseconds when
quiet and milliseconds right after the irqchip is created.
"""


class SlotMap:
    """The VM's memory slots by guest address: gpa -> (size, host address, read-only, slot)."""

    def __init__(self, vm):
        self.vm = vm
        self.mapped: dict[int, tuple[int, int, bool, int]] = {}
        self.updates = 0

    def sync(self, start: int, end: int, regions) -> None:
        """Make the slots inside [start, end) exactly `regions`: (gpa, size, host address, read-only)."""
        wanted = {gpa: (size, host, bool(readonly)) for gpa, size, host, readonly in regions}
        for gpa, (size, host, readonly, slot) in list(self.mapped.items()):
            if start <= gpa < end and wanted.get(gpa) != (size, host, readonly):
                self.vm.unmap_memory(slot)
                del self.mapped[gpa]
                self.updates += 1
        for gpa, (size, host, readonly) in sorted(wanted.items()):
            if gpa not in self.mapped:
                slot = self.vm.map_memory(gpa, size, host, readonly)
                self.mapped[gpa] = (size, host, readonly, slot)
                self.updates += 1
