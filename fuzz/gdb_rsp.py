"""Fuzz target: the gdb remote serial protocol: a byte stream from gdb, cut where the input
says, through the packet decoder (tinyvmm.debug.gdb.rsp) and every packet through the command
handler against a KvmTarget over a fake vCPU and the platform's guest memory."""

import atheris
from common import FakeVcpu, Platform, main

with atheris.instrument_imports():
    from tinyvmm.debug.gdb import rsp
    from tinyvmm.debug.gdb.commands import CommandHandler
    from tinyvmm.debug.gdb.target import KvmTarget

MAX_PACKETS = 32            # bounds the work of one input


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    platform = Platform()
    handler = CommandHandler(KvmTarget(FakeVcpu(), platform.memory, software_breakpoints=fdp.ConsumeBool()))
    if fdp.ConsumeBool():
        handler.target.choose_layout()
    decoder = rsp.PacketDecoder()
    handled = 0
    while fdp.remaining_bytes() and handled < MAX_PACKETS:
        for event in decoder.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 256))):
            if isinstance(event, rsp.Packet):
                handled += 1
                for reply in handler.handle(event.payload).replies:
                    # What the stub then sends must fit the PacketSize it announced.
                    assert len(reply) <= rsp.MAX_PACKET, (event.payload[:40], len(reply))
                    rsp.frame(reply)
    platform.check()


if __name__ == "__main__":
    main(test_one_input, "gdb_rsp")
