"""Guest instructions as text (capstone), decoded in the mode the vCPU is in."""

from dataclasses import dataclass

from ..x86 import CR0_PE, EFER_LMA


class DisassemblerUnavailable(RuntimeError):
    """capstone is not installed."""


@dataclass(frozen=True)
class Instruction:
    address: int
    raw: bytes
    text: str


def code_bits(sregs) -> int:
    """16, 32 or 64: the default operand size of the code the vCPU runs."""
    if not sregs.cr0 & CR0_PE:
        return 16
    if sregs.efer & EFER_LMA and sregs.cs.l:
        return 64
    return 32 if sregs.cs.db else 16


_engines: dict[tuple[int, bool], object] = {}


def _engine(bits: int, detail: bool = False):
    key = (bits, detail)
    if key not in _engines:
        try:
            import capstone  # ships no type information: pyproject's mypy section says so
        except ImportError:
            raise DisassemblerUnavailable(
                "capstone is not installed (pip install capstone); instructions are shown as bytes") from None
        mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
        engine = _engines[key] = capstone.Cs(capstone.CS_ARCH_X86, mode)
        engine.detail = detail
    return _engines[key]


def decode(code: bytes, address: int, bits: int):
    """The first instruction of `code` as capstone's CsInsn with its details (operands,
    registers read and written, groups), or None when it does not decode. Raises
    DisassemblerUnavailable without capstone."""
    for insn in _engine(bits, detail=True).disasm(code, address, 1):
        return insn
    return None


def disassemble(code: bytes, address: int, bits: int, count: int = 8) -> list[Instruction]:
    """Up to `count` instructions from the start of `code`, which sits at `address`.

    Stops early at bytes that do not decode; raises DisassemblerUnavailable
    without capstone.
    """
    engine = _engine(bits)
    out = []
    for insn in engine.disasm(code, address):
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        out.append(Instruction(insn.address, bytes(insn.bytes), text))
        if len(out) >= count:
            break
    return out
