/*
 * init.c - the /init program of the tinyvmm test initramfs.
 *
 * It is built freestanding (no C library) for x86-64 Linux and talks to
 * the kernel with raw system calls, which keeps the binary around one
 * kilobyte.  What it does, in order:
 *
 *   1. mounts proc on /proc, sysfs on /sys and devtmpfs on /dev;
 *   2. prints the marker line INIT_MARKER to /dev/console;
 *   3. loads /qemu_fw_cfg.ko with finit_module when the initramfs holds
 *      it (a distribution kernel builds the fw_cfg sysfs driver as a
 *      module; its initramfs for tinyvmm appends the kernel's own), and
 *      says "fw_cfg: module loaded" or "fw_cfg: module refused (-ERRNO)";
 *      then lists every QEMU fw_cfg file the kernel exposes under
 *      /sys/firmware/qemu_fw_cfg/by_name, one "fw_cfg: NAME (size N)"
 *      line each, or "fw_cfg: not present"; the contents of files under
 *      "opt/" (the user's own, -fw_cfg name=opt/...) follow their name as
 *      "fw_cfg: NAME = TEXT", at most 64 bytes, '.' for what is not
 *      printable;
 *   4. prints the CPUs the kernel brought up, "cpus: online LIST", from
 *      /sys/devices/system/cpu/online (the pc kernel is SMP);
 *   5. when the kernel has a /dev/vda (the pc kernel's virtio-blk driver
 *      found a disk), reads its first sector and prints
 *      "virtio-blk: vda N sectors, sector 0 = TEXT (HEX)" with the size
 *      from /sys/block/vda/size and the first 16 bytes; nothing otherwise;
 *   6. ends the machine.  It powers it off with
 *      reboot(LINUX_REBOOT_CMD_POWER_OFF) when the command line holds the
 *      word "tinyvmm.poweroff", or when the kernel found an ACPI FADT
 *      (/sys/firmware/acpi/tables/FACP), through which Linux powers off
 *      (SLP_TYP/SLP_EN into PM1a_CNT); "tinyvmm.restart" asks for the
 *      restart whatever the kernel has.  Otherwise it restarts the machine
 *      with reboot(LINUX_REBOOT_CMD_RESTART): with "reboot=k" on the
 *      command line the kernel then writes 0xFE to port 0x64
 *      (keyboard-controller reset), which tinyvmm and "qemu -no-reboot"
 *      both treat as the end of the guest.  Its last line says which:
 *      "init: powering the machine off" or "init: restarting the machine".
 *
 * Should the reboot call fail, init exits; the kernel then panics and,
 * because the test kernel is built with CONFIG_PANIC_TIMEOUT=-1, resets
 * the machine at once, so the guest still ends.
 */

/* The one place the marker text lives (see kernels/README.md). */
#define INIT_MARKER "TINYVMM-INIT-OK"

#define FW_CFG_BY_NAME "/sys/firmware/qemu_fw_cfg/by_name"
#define FW_CFG_MODULE "/qemu_fw_cfg.ko"
#define CPUS_ONLINE "/sys/devices/system/cpu/online"
#define DISK "/dev/vda"
#define DISK_SIZE "/sys/block/vda/size"
#define ACPI_FADT "/sys/firmware/acpi/tables/FACP"

/* Command-line words that choose how init ends the machine. */
#define WORD_POWEROFF "tinyvmm.poweroff"
#define WORD_RESTART "tinyvmm.restart"

/* x86-64 system call numbers. */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_ioctl 16
#define NR_exit 60
#define NR_mkdir 83
#define NR_sync 162
#define NR_mount 165
#define NR_reboot 169
#define NR_getdents64 217
#define NR_finit_module 313

#define O_RDONLY 0
#define O_WRONLY 1
#define O_NOCTTY 0400
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000

#define DT_DIR 4

#define TCSBRK 0x5409

#define REBOOT_MAGIC1 0xfee1deadUL
#define REBOOT_MAGIC2 0x28121969UL
#define REBOOT_CMD_RESTART 0x01234567UL
#define REBOOT_CMD_POWER_OFF 0x4321fedcUL

#define PATH_BUF 512
#define SHOWN_BYTES 64
#define SECTOR 512
#define DISK_SHOWN 16

struct dirent64 {
	unsigned long d_ino;
	long d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static long syscall3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

static long syscall5(long nr, long a, long b, long c, long d, long e)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return ret;
}

/* Where messages go: /dev/console, or stdout if it cannot be opened. */
static int out_fd;

/* Appends src to the string in buf (capacity cap); returns the new length. */
static unsigned long append(char *buf, unsigned long len, unsigned long cap,
			    const char *src)
{
	while (*src && len + 1 < cap)
		buf[len++] = *src++;
	buf[len] = 0;
	return len;
}

/* Writes a, b and c followed by a newline with a single write(). */
static void put_line(const char *a, const char *b, const char *c)
{
	char line[PATH_BUF + 64];
	unsigned long len = 0;

	len = append(line, len, sizeof(line) - 1, a);
	len = append(line, len, sizeof(line) - 1, b);
	len = append(line, len, sizeof(line) - 1, c);
	line[len++] = '\n';
	syscall3(NR_write, out_fd, (long)line, (long)len);
}

static void mount_fs(const char *type, const char *target)
{
	syscall3(NR_mkdir, (long)target, 0755, 0);
	if (syscall5(NR_mount, (long)type, (long)target, (long)type, 0, 0) < 0)
		put_line("init: could not mount ", type, "");
}

/* Reads at most cap - 1 bytes of a file into buf, without the trailing
 * newline; returns the length, or -1 when the file cannot be read. */
static long read_text(const char *path, char *buf, long cap)
{
	long fd = syscall3(NR_open, (long)path, O_RDONLY | O_CLOEXEC, 0);
	long n = fd < 0 ? -1 : syscall3(NR_read, fd, (long)buf, cap - 1);

	if (fd >= 0)
		syscall3(NR_close, fd, 0, 0);
	if (n < 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = 0;
	return n;
}

/* '.' for the bytes of text[0..n) that are not printable ASCII. */
static void printable(char *text, long n)
{
	long i;

	for (i = 0; i < n; i++)
		if (text[i] < ' ' || text[i] > '~')
			text[i] = '.';
	text[n] = 0;
}

/* Prints the first bytes of the entry whose by_name path is path (length len). */
static void show_contents(char *path, unsigned long len, const char *name)
{
	char text[SHOWN_BYTES + 1], line[PATH_BUF + SHOWN_BYTES + 4];
	long fd, n;

	append(path, len, PATH_BUF, "/raw");
	fd = syscall3(NR_open, (long)path, O_RDONLY | O_CLOEXEC, 0);
	path[len] = 0;
	n = fd < 0 ? -1 : syscall3(NR_read, fd, (long)text, SHOWN_BYTES);
	if (fd >= 0)
		syscall3(NR_close, fd, 0, 0);
	if (n < 0) {
		put_line("fw_cfg: cannot read ", name, "");
		return;
	}
	printable(text, n);
	n = append(line, 0, sizeof(line), name);
	n = append(line, n, sizeof(line), " = ");
	append(line, n, sizeof(line), text);
	put_line("fw_cfg: ", line, "");
}

/* Prints one fw_cfg entry; path is its by_name path, name starts inside it. */
static void show_entry(char *path, unsigned long len, const char *name)
{
	char size[32];
	long n;

	append(path, len, PATH_BUF, "/size");
	n = read_text(path, size, sizeof(size));
	path[len] = 0;
	if (n <= 0) {
		size[0] = '?';
		size[1] = 0;
	}
	/* The line is "fw_cfg: NAME (size N)"; NAME ends the path buffer. */
	n = append(path, len, PATH_BUF, " (size ");
	n = append(path, n, PATH_BUF, size);
	append(path, n, PATH_BUF, ")");
	put_line("fw_cfg: ", name, "");
	path[len] = 0;
	if (name[0] == 'o' && name[1] == 'p' && name[2] == 't' && name[3] == '/')
		show_contents(path, len, name);
}

/*
 * Walks the by_name tree.  Directories there are the components of the
 * entry names ("etc", "opt/tinyvmm"); each entry itself is a symbolic
 * link to its by_key directory, which holds a "size" file.
 */
static long walk(char *path, unsigned long len, unsigned long name_at)
{
	char buf[1024];
	long fd, n, pos, count = 0;

	fd = syscall3(NR_open, (long)path, O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		      0);
	if (fd < 0)
		return -1;
	while ((n = syscall3(NR_getdents64, fd, (long)buf, sizeof(buf))) > 0) {
		for (pos = 0; pos < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + pos);
			unsigned long sub;

			pos += d->d_reclen;
			if (d->d_name[0] == '.' &&
			    (!d->d_name[1] ||
			     (d->d_name[1] == '.' && !d->d_name[2])))
				continue;
			sub = append(path, len, PATH_BUF, "/");
			sub = append(path, sub, PATH_BUF, d->d_name);
			if (d->d_type == DT_DIR) {
				long k = walk(path, sub, name_at);

				if (k > 0)
					count += k;
			} else {
				show_entry(path, sub, path + name_at);
				count++;
			}
			path[len] = 0;
		}
	}
	syscall3(NR_close, fd, 0, 0);
	return count;
}

/* Writes the negative errno `ret` as "-N" into buf (at least 24 bytes). */
static void errno_text(long ret, char *buf)
{
	char digits[24];
	int n = 0, i = 0;
	unsigned long value = (unsigned long)-ret;

	do
		digits[n++] = (char)('0' + value % 10);
	while ((value /= 10) && n < 20);
	buf[i++] = '-';
	while (n)
		buf[i++] = digits[--n];
	buf[i] = 0;
}

/* The driver a distribution kernel builds as a module, when the initramfs has it. */
static void load_fw_cfg_module(void)
{
	char text[24];
	long fd = syscall3(NR_open, (long)FW_CFG_MODULE, O_RDONLY | O_CLOEXEC, 0);
	long ret;

	if (fd < 0)
		return;
	ret = syscall3(NR_finit_module, fd, (long)"", 0);
	syscall3(NR_close, fd, 0, 0);
	if (ret == 0) {
		put_line("fw_cfg: module loaded", "", "");
		return;
	}
	errno_text(ret, text);
	put_line("fw_cfg: module refused (", text, ")");
}

static void list_fw_cfg(void)
{
	char path[PATH_BUF];
	unsigned long len = append(path, 0, PATH_BUF, FW_CFG_BY_NAME);

	if (walk(path, len, len + 1) < 0)
		put_line("fw_cfg: not present", "", "");
}

static void show_cpus(void)
{
	char cpus[128];

	if (read_text(CPUS_ONLINE, cpus, sizeof(cpus)) < 0)
		put_line("cpus: cannot read ", CPUS_ONLINE, "");
	else
		put_line("cpus: online ", cpus, "");
}

/* The first sector of /dev/vda and the disk's size, when there is one. */
static void show_disk(void)
{
	static const char digits[] = "0123456789abcdef";
	char sector[SECTOR], size[32], hex[2 * DISK_SHOWN + 1], line[128];
	long fd, n, i;

	fd = syscall3(NR_open, (long)DISK, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return;
	n = syscall3(NR_read, fd, (long)sector, SECTOR);
	syscall3(NR_close, fd, 0, 0);
	if (n < DISK_SHOWN) {
		put_line("virtio-blk: cannot read ", DISK, "");
		return;
	}
	if (read_text(DISK_SIZE, size, sizeof(size)) <= 0) {
		size[0] = '?';
		size[1] = 0;
	}
	for (i = 0; i < DISK_SHOWN; i++) {
		hex[2 * i] = digits[(sector[i] >> 4) & 15];
		hex[2 * i + 1] = digits[sector[i] & 15];
	}
	hex[2 * DISK_SHOWN] = 0;
	printable(sector, DISK_SHOWN);
	n = append(line, 0, sizeof(line), size);
	n = append(line, n, sizeof(line), " sectors, sector 0 = ");
	n = append(line, n, sizeof(line), sector);
	n = append(line, n, sizeof(line), " (");
	n = append(line, n, sizeof(line), hex);
	append(line, n, sizeof(line), ")");
	put_line("virtio-blk: vda ", line, "");
}

/* True when the word w appears, whole, in the space-separated text s. */
static int has_word(const char *s, const char *w)
{
	const char *p, *q;

	for (p = s; *p;) {
		while (*p == ' ' || *p == '\n')
			p++;
		for (q = w; *q && *p == *q; p++, q++)
			;
		if (!*q && (!*p || *p == ' ' || *p == '\n'))
			return 1;
		while (*p && *p != ' ' && *p != '\n')
			p++;
	}
	return 0;
}

/* Whether to power off (see the top of this file). */
static int wants_power_off(void)
{
	char cmdline[PATH_BUF * 4];
	long fd;

	if (read_text("/proc/cmdline", cmdline, sizeof(cmdline)) < 0)
		cmdline[0] = 0;
	if (has_word(cmdline, WORD_RESTART))
		return 0;
	if (has_word(cmdline, WORD_POWEROFF))
		return 1;
	fd = syscall3(NR_open, (long)ACPI_FADT, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	syscall3(NR_close, fd, 0, 0);
	return 1;
}

__attribute__((noreturn, used)) static void init_main(void)
{
	long fd = syscall3(NR_open, (long)"/dev/console", O_WRONLY | O_NOCTTY,
			   0);
	int power_off;

	out_fd = fd >= 0 ? (int)fd : 1;
	mount_fs("proc", "/proc");
	mount_fs("sysfs", "/sys");
	/* Over the initramfs's /dev: block devices appear only there. */
	mount_fs("devtmpfs", "/dev");
	put_line(INIT_MARKER, "", "");
	load_fw_cfg_module();
	list_fw_cfg();
	show_cpus();
	show_disk();
	power_off = wants_power_off();
	put_line(power_off ? "init: powering the machine off" :
			     "init: restarting the machine", "", "");
	/* Let the serial line finish sending before the machine ends. */
	syscall3(NR_ioctl, out_fd, TCSBRK, 1);
	syscall3(NR_sync, 0, 0, 0);
	syscall5(NR_reboot, REBOOT_MAGIC1, REBOOT_MAGIC2,
		 power_off ? REBOOT_CMD_POWER_OFF : REBOOT_CMD_RESTART, 0, 0);
	put_line("init: reboot() failed, exiting", "", "");
	for (;;)
		syscall3(NR_exit, 1, 0, 0);
}

/* Entry point: align the stack as the ABI expects and run init_main. */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	and $-16, %rsp\n"
	"	call init_main\n");
