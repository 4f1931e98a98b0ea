"""The i8042 keyboard controller and a PS/2 keyboard behind it: enough for firmware probes and `reboot=k`.

Range of five ports from 0x60: offset 0 is data, offset 4 status/command.
Commands 0xF0-0xFF pulse the output-port bits whose mask bit (bits 3-0) is
clear; only bit 0 (the reset line) is wired, so every even one of them (0xF0,
0xF2 ... 0xFE) resets the machine through `on_reset`, as does writing an
output-port value with bit 0 clear; the odd ones do nothing. Command 0xD2
puts the next data byte in the output buffer as if the keyboard had sent it.

The keyboard answers the commands firmware and Linux send while probing (IBM
PS/2 keyboard protocol: every byte is acknowledged with 0xFA; reset adds the
self-test result 0xAA, identify the MF2 ID 0xAB 0x83, echo answers 0xEE), so
SeaBIOS's keyboard setup finishes at once instead of waiting out its 4-second
timeout. It never sends keys, and there is no auxiliary (mouse) device: bytes
for it (after command 0xD4) are dropped, as with an empty mouse port.
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
CMD_WRITE_KBD_OUTPUT = 0xD2     # the next data byte is returned as keyboard data
CMD_PULSE_OUTPUT = 0xF0         # 0xF0-0xFF: pulse the output-port bits clear in bits 3-0
CMD_RESET_CPU = 0xFE            # the usual pulse: bit 0 only

CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_WRITE_AUX = 0xD4

CONFIG_KBD_DISABLED = 0x10
CONFIG_AUX_DISABLED = 0x20

SELF_TEST_OK = 0x55
KEYBOARD_ACK = 0xFA
KEYBOARD_RESEND = 0xFE          # the keyboard did not understand the byte
KEYBOARD_SELF_TEST_OK = 0xAA
KEYBOARD_ECHO = 0xEE
KEYBOARD_ID = (0xAB, 0x83)      # MF2 keyboard, translated
# Keyboard commands followed by one parameter byte (LEDs, scan code set, typematic rate)
KBD_SET_LEDS, KBD_ECHO, KBD_SCANCODE_SET, KBD_IDENTIFY, KBD_TYPEMATIC = 0xED, 0xEE, 0xF0, 0xF2, 0xF3
KBD_SET_KEY_MAKE_BREAK = 0xFC   # takes a key's scan code
KBD_RESET = 0xFF
KBD_COMMANDS_WITH_PARAMETER = (KBD_SET_LEDS, KBD_SCANCODE_SET, KBD_TYPEMATIC, KBD_SET_KEY_MAKE_BREAK)
# Commands acknowledged with nothing to follow: scanning on, defaults with scanning off/on,
# all keys typematic/make/break. 0x00 is acknowledged by QEMU's keyboard, so by ours too.
KBD_COMMANDS_ACKED = (0x00, 0xF4, 0xF5, 0xF6, 0xFA)
SCANCODE_SET = 2
OUTPUT_PORT_RESET_LINE = 0x01   # active low: clearing it resets the CPU


class I8042(RegisterDevice):
    name = "i8042"

    def __init__(self, on_reset=None):
        self.on_reset = on_reset or (lambda: None)
        self.config = 0x45
        self.output_port = 0x03     # reset line high, A20 enabled
        self.output = []
        self.pending = None         # command waiting for its data byte
        self.keyboard_pending = None    # keyboard command waiting for its parameter
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
            elif pending == CMD_WRITE_KBD_OUTPUT:
                self.output.append(value)
            elif pending != CMD_WRITE_AUX:      # no mouse: its bytes go nowhere
                self._keyboard(value)

    def _keyboard(self, value: int) -> None:
        """A byte sent to the keyboard: a command, or the parameter of the previous one."""
        if self.keyboard_pending is not None:
            command, self.keyboard_pending = self.keyboard_pending, None
            self.output.append(KEYBOARD_ACK)
            if command == KBD_SCANCODE_SET and value == 0:
                self.output.append(SCANCODE_SET)    # 0 asks which set is in use
        elif value == KBD_ECHO:
            self.output.append(KEYBOARD_ECHO)
        elif value in KBD_COMMANDS_WITH_PARAMETER:
            self.output.append(KEYBOARD_ACK)
            self.keyboard_pending = value
        elif value == KBD_RESET:
            self.output.extend((KEYBOARD_ACK, KEYBOARD_SELF_TEST_OK))
        elif value == KBD_IDENTIFY:
            self.output.extend((KEYBOARD_ACK, *KEYBOARD_ID))
        elif value in KBD_COMMANDS_ACKED:
            self.output.append(KEYBOARD_ACK)
        else:
            self.output.append(KEYBOARD_RESEND)

    def _command(self, value: int) -> None:
        if value == CMD_READ_CONFIG:
            self.output.append(self.config)
        elif value in (CMD_WRITE_CONFIG, CMD_WRITE_OUTPUT_PORT, CMD_WRITE_KBD_OUTPUT, CMD_WRITE_AUX):
            self.pending = value
        elif value in (CMD_KBD_DISABLE, CMD_KBD_ENABLE):
            self.config = self.config | CONFIG_KBD_DISABLED if value == CMD_KBD_DISABLE \
                else self.config & ~CONFIG_KBD_DISABLED
        elif value in (CMD_AUX_DISABLE, CMD_AUX_ENABLE):
            self.config = self.config | CONFIG_AUX_DISABLED if value == CMD_AUX_DISABLE \
                else self.config & ~CONFIG_AUX_DISABLED
        elif value == CMD_SELF_TEST:
            self.output.append(SELF_TEST_OK)
        elif value in (CMD_INTERFACE_TEST, CMD_AUX_TEST):
            self.output.append(0x00)
        elif value == CMD_READ_OUTPUT_PORT:
            self.output.append(self.output_port)
        elif value >= CMD_PULSE_OUTPUT:
            if not value & OUTPUT_PORT_RESET_LINE:     # bit 0 pulsed low: the CPU resets
                self._reset()

    def _reset(self) -> None:
        self.resets += 1
        self.on_reset()
