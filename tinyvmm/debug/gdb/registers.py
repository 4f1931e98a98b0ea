"""gdb's registers from and to KVM's structures (kvm_regs, kvm_sregs, kvm_fpu), per layout."""

from ...x86 import CR0_PE, EFER_LMA, RFLAGS_VM
from . import tdesc
from .events import TargetError


def layout_for(sregs) -> tdesc.Layout:
    """The registers and code size gdb gets, from the vCPU's mode when gdb connects.

    gdb reads the description once: a guest that changes mode later keeps
    the layout (the i386 one shows the low 32 bits of 64-bit registers;
    `set architecture` changes how gdb decodes code).
    """
    if sregs.efer & EFER_LMA:
        return tdesc.AMD64
    return tdesc.I386 if sregs.cr0 & CR0_PE else tdesc.I8086


_I386_GPRS = {"eax": "rax", "ecx": "rcx", "edx": "rdx", "ebx": "rbx",
              "esp": "rsp", "ebp": "rbp", "esi": "rsi", "edi": "rdi", "eip": "rip"}
_AMD64_GPRS = {name: name for name in
               ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip")
               + tuple(f"r{i}" for i in range(8, 16))}
_CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")
_FPU_SCALARS = {"fctrl": "fcw", "fstat": "fsw", "fioff": "last_ip", "fooff": "last_dp", "fop": "last_opcode"}


def _gprs(layout: tdesc.Layout) -> dict[str, str]:
    return _AMD64_GPRS if layout is tdesc.AMD64 else _I386_GPRS


def _x87_tag(value: int) -> int:
    """The full tag of one non-empty x87 register: 0 valid, 1 zero, 2 special."""
    exponent, mantissa = (value >> 64) & 0x7FFF, value & ((1 << 64) - 1)
    if exponent == 0x7FFF:
        return 2
    if exponent == 0:
        return 1 if mantissa == 0 else 2
    return 0 if mantissa >> 63 else 2


def full_tag_word(fsw: int, ftwx: int, fpr: list[int]) -> int:
    """The 16-bit x87 tag word from FXSAVE's abridged one (a bit per physical register)."""
    top = (fsw >> 11) & 7
    word = 0
    for physical in range(8):
        tag = 3 if not ftwx & (1 << physical) else _x87_tag(fpr[(physical - top) & 7])
        word |= tag << (2 * physical)
    return word


def abridged_tag(tag_word: int) -> int:
    return sum(1 << i for i in range(8) if (tag_word >> (2 * i)) & 3 != 3)


def read_registers(vcpu, layout: tdesc.Layout) -> dict[str, int | None]:
    """Every register of the layout, from KVM's view of the vCPU; None for one KVM does not
    show (gdb is told it is unavailable)."""
    regs, sregs, fpu = vcpu.get_regs(), vcpu.get_sregs(), vcpu.get_fpu()
    mask = (1 << 64) - 1 if layout is tdesc.AMD64 else 0xFFFFFFFF
    values = {name: getattr(regs, field) & mask for name, field in _gprs(layout).items()}
    values["eflags"] = regs.rflags & 0xFFFFFFFF
    for seg in tdesc.SEGMENT_NAMES:
        values[seg] = getattr(sregs, seg).selector
        values[f"{seg}_base"] = getattr(sregs, seg).base & mask
    values["gdtr_base"], values["gdtr_limit"] = sregs.gdt.base & mask, sregs.gdt.limit
    values["idtr_base"], values["idtr_limit"] = sregs.idt.base & mask, sregs.idt.limit
    for name in _CONTROL:
        values[name] = getattr(sregs, name)
    fpr = [int.from_bytes(bytes(fpu.fpr[i])[:10], "little") for i in range(8)]
    for i in range(8):
        values[f"st{i}"] = fpr[i]
    for name, field in _FPU_SCALARS.items():
        values[name] = getattr(fpu, field) & 0xFFFFFFFF
    values["ftag"] = full_tag_word(fpu.fsw, fpu.ftwx, fpr)
    values["fiseg"] = values["foseg"] = 0       # KVM's FXSAVE image has no selectors
    for i in range(16):
        values[f"xmm{i}"] = int.from_bytes(bytes(fpu.xmm[i]), "little")
    values["mxcsr"] = fpu.mxcsr
    return {reg.name: values.get(reg.name) for reg in layout.registers}


def write_registers(vcpu, layout: tdesc.Layout, values: dict[str, int]) -> None:
    """Apply the registers whose value differs from the vCPU's (a G packet sends them all)."""
    current = read_registers(vcpu, layout)
    changed = {name: value for name, value in values.items()
               if name in current and current[name] != value}
    if not changed:
        return
    regs, sregs, fpu = vcpu.get_regs(), vcpu.get_sregs(), vcpu.get_fpu()
    touched = set()
    gprs = _gprs(layout)
    for name, value in changed.items():
        if name in gprs:
            field = gprs[name]
            if layout is not tdesc.AMD64 and name != "eip":
                value = (getattr(regs, field) & ~0xFFFFFFFF) | value
            setattr(regs, field, value)
            touched.add("regs")
        elif name == "eflags":
            regs.rflags = value
            touched.add("regs")
        elif name in tdesc.SEGMENT_NAMES:
            seg = getattr(sregs, name)
            seg.selector = value
            if not sregs.cr0 & CR0_PE or regs.rflags & RFLAGS_VM:
                seg.base = value << 4       # real mode: the base follows the selector
            touched.add("sregs")
        elif name.endswith("_base") and name[:-5] in tdesc.SEGMENT_NAMES:
            getattr(sregs, name[:-5]).base = value
            touched.add("sregs")
        elif name in ("gdtr_base", "gdtr_limit", "idtr_base", "idtr_limit"):
            table = sregs.gdt if name.startswith("gdtr") else sregs.idt
            setattr(table, name[5:], value)
            touched.add("sregs")
        elif name in _CONTROL:
            setattr(sregs, name, value)
            touched.add("sregs")
        elif name.startswith("st"):
            index = int(name[2:])
            raw = (value & ((1 << 80) - 1)).to_bytes(10, "little") + bytes(fpu.fpr[index])[10:]
            fpu.fpr[index][:] = list(raw)
            touched.add("fpu")
        elif name in _FPU_SCALARS:
            setattr(fpu, _FPU_SCALARS[name], value)
            touched.add("fpu")
        elif name == "ftag":
            fpu.ftwx = abridged_tag(value)
            touched.add("fpu")
        elif name.startswith("xmm"):
            fpu.xmm[int(name[3:])][:] = list(value.to_bytes(16, "little"))
            touched.add("fpu")
        elif name == "mxcsr":
            fpu.mxcsr = value
            touched.add("fpu")
        else:
            raise TargetError(f"register {name} cannot be set through KVM")
    if "regs" in touched:
        vcpu.set_regs(regs)
    if "sregs" in touched:
        vcpu.set_sregs(sregs)
    if "fpu" in touched:
        vcpu.set_fpu(fpu)
