"""The i8042 keyboard controller: enough for firmware probes and Linux's `reboot=k`.

Range of five ports from 0x60: offset 0 is data, offset 4 status/command.
Command 0xFE (pulse the reset line) and writing an output-port value with
bit 0 clear both reset the machine through `on_reset`.
"""

from ..bus import RegisterDevice

DATA = 0
COMMAND = 4

STATUS_OUTPUT_FULL = 0x01
STATUS_SYSTEM = 0x04       # self-test passed
STATUS_COMMAND = 0x08      # last write was a command

CMD_READ_CONFIG = 0x20
CMD_WRITE_CONFIG = 0x60
CMD_SELF_TEST = 0xAA
CMD_INTERFACE_TEST = 0xAB
CMD_READ_OUTPUT_PORT = 0xD0
CMD_WRITE_OUTPUT_PORT = 0xD1
CMD_RESET_CPU = 0xFE

SELF_TEST_OK = 0x55
KEYBOARD_ACK = 0xFA
OUTPUT_PORT_RESET_LINE = 0x01   # active low: clearing it resets the CPU


class I8042(RegisterDevice):
    name = "i8042"

    def __init__(self, on_reset=None):
        self.on_reset = on_reset or (lambda: None)
        self.config = 0x45
        self.output_port = 0x03     # reset line high, A20 enabled
        self.output = []
        self.pending = None         # command waiting for its data byte
        self.last_was_command = False
        self.resets = 0

    def read_register(self, offset: int, size: int) -> int:
        if offset == COMMAND:
            return (STATUS_SYSTEM | (STATUS_COMMAND if self.last_was_command else 0) |
                    (STATUS_OUTPUT_FULL if self.output else 0))
        if offset == DATA:
            return self.output.pop(0) if self.output else 0
        return 0xFF

    def write_register(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == COMMAND:
            self.last_was_command = True
            self._command(value)
        elif offset == DATA:
            self.last_was_command = False
            pending, self.pending = self.pending, None
            if pending == CMD_WRITE_CONFIG:
                self.config = value
            elif pending == CMD_WRITE_OUTPUT_PORT:
                self.output_port = value
                if not value & OUTPUT_PORT_RESET_LINE:
                    self._reset()
            else:
                self.output.append(KEYBOARD_ACK)

    def _command(self, value: int) -> None:
        if value == CMD_READ_CONFIG:
            self.output.append(self.config)
        elif value in (CMD_WRITE_CONFIG, CMD_WRITE_OUTPUT_PORT):
            self.pending = value
        elif value == CMD_SELF_TEST:
            self.output.append(SELF_TEST_OK)
        elif value == CMD_INTERFACE_TEST:
            self.output.append(0x00)
        elif value == CMD_READ_OUTPUT_PORT:
            self.output.append(self.output_port)
        elif value == CMD_RESET_CPU:
            self._reset()

    def _reset(self) -> None:
        self.resets += 1
        self.on_reset()
