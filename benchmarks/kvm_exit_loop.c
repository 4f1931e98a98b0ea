/* The host's own cost of a port-I/O exit: a minimal C VMM that runs a 64 KiB
   real-mode image (as tinyvmm run --bios does) and times the exits between
   the guest's writes of 8 and 9 to port 0xf4. Prints "EXITS NANOSECONDS". */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s IMAGE64K\n", argv[0]); return 2; }
    int img = open(argv[1], O_RDONLY);
    if (img < 0) die("open image");
    void *rom = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (read(img, rom, 0x10000) != 0x10000) die("read image");
    void *ram = mmap(NULL, 0xF0000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    struct kvm_userspace_memory_region slots[] = {
        {0, 0, 0, 0xF0000, (uint64_t)ram},
        {1, KVM_MEM_READONLY, 0xF0000, 0x10000, (uint64_t)rom},
        {2, KVM_MEM_READONLY, 0xFFFF0000, 0x10000, (uint64_t)rom},
    };
    for (int i = 0; i < 3; i++)
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slots[i]) < 0) die("KVM_SET_USER_MEMORY_REGION");
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xFEFFD000ul) < 0) die("KVM_SET_TSS_ADDR");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);

    uint64_t exits = 0, start = 0, end = 0;
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        exits++;
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 1;
        }
        uint8_t value = *((uint8_t *)run + run->io.data_offset);
        if (run->io.port == 0xf4 && value == 8) { start = now_ns(); exits = 0; }
        if (run->io.port == 0xf4 && value == 9) { end = now_ns(); exits--; }
        if (run->io.port == 0x64) break;
    }
    printf("%llu %llu\n", (unsigned long long)exits, (unsigned long long)(end - start));
    return 0;
}
