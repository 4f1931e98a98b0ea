/*
 * init32.c - a 32-bit /init32 for the tinyvmm test initramfs: the IA-32
 * system-call path (int $0x80) of a 64-bit kernel with IA32_EMULATION.
 *
 * Booted with "rdinit=/init32", it opens /dev/console, prints INIT32_MARKER
 * and restarts the machine (reboot=k ends the run, as with /init).  Like
 * /init it is freestanding: no C library, raw system calls, static.
 */

#define INIT32_MARKER "TINYVMM-INIT32-OK\n"

/* i386 system call numbers. */
#define NR_exit 1
#define NR_write 4
#define NR_open 5
#define NR_reboot 88

#define O_WRONLY 1
#define O_NOCTTY 0400

#define REBOOT_MAGIC1 0xfee1deadUL
#define REBOOT_MAGIC2 0x28121969UL
#define REBOOT_CMD_RESTART 0x01234567UL

static long syscall3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory");
	return ret;
}

__attribute__((noreturn, used)) static void init_main(void)
{
	long fd = syscall3(NR_open, (long)"/dev/console", O_WRONLY | O_NOCTTY, 0);

	if (fd < 0)
		fd = 1;
	syscall3(NR_write, fd, (long)INIT32_MARKER, sizeof(INIT32_MARKER) - 1);
	syscall3(NR_reboot, REBOOT_MAGIC1, REBOOT_MAGIC2, REBOOT_CMD_RESTART);
	for (;;)
		syscall3(NR_exit, 1, 0, 0);
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	and $-16, %esp\n"
	"	call init_main\n");
