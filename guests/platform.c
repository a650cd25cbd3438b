/*
 * platform: reads the PC platform registers a firmware or a test kernel
 * written for QEMU looks at, and prints what it finds: QEMU's fw_cfg
 * (signature, CPU count, RAM size through the 0x510/0x511 I/O interface),
 * the CMOS memory-size registers, the RTC's data format, the i8042 self
 * test, and unmapped I/O ports reading as all ones.  Meant to be diffed
 * against QEMU.
 */
#include "common/rt.h"

static void fw_select(uint16_t key) { outw(0x510, key); }

static uint32_t fw_read(int n)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint32_t)inb(0x511) << (8 * i);
    return v;
}

static uint8_t cmos(uint8_t reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("platform test\n");

    char sig[5];
    fw_select(0x0000);
    for (int i = 0; i < 4; i++)
        sig[i] = (char)inb(0x511);
    sig[4] = 0;
    printf("fw_cfg signature: %s\n", sig);
    fw_select(0x0005);
    printf("fw_cfg cpus: %u\n", fw_read(2));
    fw_select(0x0003);
    uint32_t lo = fw_read(4), hi = fw_read(4);
    printf("fw_cfg ram: %08x%08x\n", hi, lo);

    printf("cmos base memory: %u KiB\n", cmos(0x15) | (cmos(0x16) << 8));
    printf("cmos extended memory: %u KiB\n", cmos(0x30) | (cmos(0x31) << 8));
    printf("cmos memory above 16 MiB: %u x 64 KiB\n", cmos(0x34) | (cmos(0x35) << 8));
    printf("rtc status D: %02x\n", cmos(0x0D));
    printf("rtc 24-hour mode: %s\n", (cmos(0x0B) & 0x02) ? "yes" : "no");

    /* i8042 controller self test: 0xAA answers 0x55. */
    while (inb(0x64) & 0x02)
        ;
    outb(0x64, 0xAA);
    while (!(inb(0x64) & 0x01))
        ;
    printf("i8042 self test: %02x\n", inb(0x60));

    printf("unmapped port 0x2f0: %02x %04x %08x\n", inb(0x2F0), inw(0x2F0), inl(0x2F0));
    return EXIT_OK;
}
