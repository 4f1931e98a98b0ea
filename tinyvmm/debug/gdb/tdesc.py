"""Register layouts gdb is told about (target descriptions) and their `g`-packet encoding.

Three layouts: i8086 and i386 (the same registers, 16-bit or 32-bit code; the
i386 register set is also what gdb's `set architecture i8086` expects) and
x86-64 (long mode). Each has gdb's standard core and SSE
features, whose register names and order gdb checks, plus a feature of our
own with the segment bases, descriptor tables and control registers, which
gdb shows by name (`p $cr0`, `info registers cs_base`).
"""

from dataclasses import dataclass

CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
SYSTEM = "org.tinyvmm.x86.system"


@dataclass(frozen=True)
class Register:
    name: str
    bits: int
    type: str
    group: str | None = None
    feature: str = CORE


@dataclass(frozen=True)
class Layout:
    name: str                     # what the XML names as <architecture>
    registers: tuple[Register, ...]

    @property
    def pc_name(self) -> str:
        return "rip" if self.name == "i386:x86-64" else "eip"

    def index(self, name: str) -> int:
        for i, reg in enumerate(self.registers):
            if reg.name == name:
                return i
        raise KeyError(name)

    @property
    def g_size(self) -> int:
        return sum(reg.bits for reg in self.registers) // 8

    def pack(self, values: dict[str, int | None]) -> bytes:
        """The `g` reply payload (hex); registers missing from values are sent as unavailable."""
        return b"".join(encode_register(reg, values.get(reg.name)) for reg in self.registers)

    def unpack(self, payload: bytes) -> dict[str, int]:
        """Values from a `G` payload (hex); unavailable ('xx') registers are left out."""
        values = {}
        pos = 0
        for reg in self.registers:
            width = reg.bits // 4
            chunk = payload[pos:pos + width]
            if len(chunk) < width:
                break                       # gdb may send a shorter G; the rest stays as it is
            if b"x" not in chunk:
                values[reg.name] = decode_register(chunk)
            pos += width
        return values


def encode_register(reg: Register, value: int | None) -> bytes:
    size = reg.bits // 8
    if value is None:
        return b"xx" * size
    return (value & ((1 << reg.bits) - 1)).to_bytes(size, "little").hex().encode()


def decode_register(text: bytes) -> int:
    return int.from_bytes(bytes.fromhex(text.decode("ascii")), "little")


def _x87() -> list[Register]:
    regs = [Register(f"st{i}", 80, "i387_ext") for i in range(8)]
    regs += [Register(name, 32, "int", "float")
             for name in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")]
    return regs


def _system(base_bits: int) -> list[Register]:
    regs = [Register(f"{seg}_base", base_bits, "data_ptr", "system", SYSTEM)
            for seg in ("cs", "ss", "ds", "es", "fs", "gs")]
    regs += [Register("gdtr_base", base_bits, "data_ptr", "system", SYSTEM),
             Register("gdtr_limit", 16, "uint16", "system", SYSTEM),
             Register("idtr_base", base_bits, "data_ptr", "system", SYSTEM),
             Register("idtr_limit", 16, "uint16", "system", SYSTEM)]
    regs += [Register(name, 64, "uint64", "system", SYSTEM)
             for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")]
    return regs


SEGMENT_NAMES = ("cs", "ss", "ds", "es", "fs", "gs")

I386 = Layout("i386", tuple(
    [Register(name, 32, "int32") for name in ("eax", "ecx", "edx", "ebx")]
    + [Register("esp", 32, "data_ptr"), Register("ebp", 32, "data_ptr"),
       Register("esi", 32, "int32"), Register("edi", 32, "int32"),
       Register("eip", 32, "code_ptr"), Register("eflags", 32, "x86_eflags")]
    + [Register(seg, 32, "int32") for seg in SEGMENT_NAMES]
    + _x87()
    + [Register(f"xmm{i}", 128, "vec128", "vector", SSE) for i in range(8)]
    + [Register("mxcsr", 32, "int", "vector", SSE)]
    + _system(32)))

# The same registers under gdb's 16-bit architecture name, so that gdb decodes
# real-mode code as 16-bit without being told (`set architecture i8086`).
I8086 = Layout("i8086", I386.registers)

AMD64 = Layout("i386:x86-64", tuple(
    [Register(name, 64, "int64") for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")]
    + [Register("rbp", 64, "data_ptr"), Register("rsp", 64, "data_ptr")]
    + [Register(f"r{i}", 64, "int64") for i in range(8, 16)]
    + [Register("rip", 64, "code_ptr"), Register("eflags", 32, "x86_eflags")]
    + [Register(seg, 32, "int32") for seg in SEGMENT_NAMES]
    + _x87()
    + [Register(f"xmm{i}", 128, "vec128", "vector", SSE) for i in range(16)]
    + [Register("mxcsr", 32, "int", "vector", SSE)]
    + _system(64)))

# Architectural EFLAGS bits, for gdb's display of the register as flags.
EFLAGS_FIELDS = (("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
                 ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18),
                 ("VIF", 19), ("VIP", 20), ("ID", 21))

# Types are looked up in the feature that uses them, so each feature declares its own.
_EFLAGS_TYPE = """\
    <flags id="x86_eflags" size="4">
{flags}
    </flags>"""

_VECTOR_TYPES = """\
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/>
      <field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/>
      <field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/>
      <field name="uint128" type="uint128"/>
    </union>"""


def target_xml(layout: Layout) -> str:
    """The whole target description, one document, registers numbered in g-packet order."""
    flags = "\n".join(f'      <field name="{name}" start="{bit}" end="{bit}"/>'
                      for name, bit in EFLAGS_FIELDS)
    parts = ['<?xml version="1.0"?>',
             '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target>",
             f"  <architecture>{layout.name}</architecture>"]
    feature = None
    for number, reg in enumerate(layout.registers):
        if reg.feature != feature:
            if feature is not None:
                parts.append("  </feature>")
            feature = reg.feature
            parts.append(f'  <feature name="{feature}">')
            if feature == CORE:
                parts.append(_EFLAGS_TYPE.format(flags=flags))
            elif feature == SSE:
                parts.append(_VECTOR_TYPES)
        group = f' group="{reg.group}"' if reg.group else ""
        parts.append(f'    <reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.type}" '
                     f'regnum="{number}"{group}/>')
    parts += ["  </feature>", "</target>", ""]
    return "\n".join(parts)
