/*
 * testdev: QEMU's pc-testdev as test suites drive it: the scratch register
 * at 0xE0 with byte lanes, an interrupt raised by writing its line's port
 * (IRQ 5 through the 8259, IRQ 10 through the I/O APIC, level-triggered:
 * it stays in service until the line drops), and the scratch memory at
 * 0xFF000000 written and read at every width, with string instructions
 * and a read-modify-write. Run under QEMU with -device pc-testdev.
 */
#include "common/rt.h"

#define IOMEM ((volatile uint8_t *)0xFF000000u)
#define IOAPIC 0xFEC00000u

static int failures;

static void check(int ok, const char *what)
{
    printf("%s: %s\n", what, ok ? "ok" : "FAIL");
    if (!ok)
        failures++;
}

static volatile uint32_t irq5, irq10;

static void on_irq5(struct regs *r)
{
    (void)r;
    irq5++;
    outb(0x2005, 0); /* drop the line */
    outb(0x20, 0x20);
}

static void on_irq10(struct regs *r)
{
    (void)r;
    irq10++;
    if (irq10 == 3)
        outb(0x200A, 0); /* drop it on the third delivery */
    *(volatile uint32_t *)0xFEE000B0u = 0;
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)IOAPIC = reg;
    *(volatile uint32_t *)(IOAPIC + 0x10) = v;
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("testdev test\n");

    outl(0xE0, 0x11223344);
    outb(0xE1, 0xAB);
    outw(0xE2, 0xCDEF);
    printf("scratch register: %08x, byte 3 %02x\n", inl(0xE0), inb(0xE3));
    outl(0xE4, 0x1000); /* flush page: harmless */

    /* IRQ 5 through the 8259, edge: one interrupt per rise. */
    pic_remap(0xDF, 0xFF);
    idt_set_handler(0x25, on_irq5);
    outb(0x2005, 1);
    sti();
    for (volatile int i = 0; i < 1000; i++)
        ;
    cli();
    printf("IRQ 5 raised through port 0x2005: %u interrupt\n", irq5);

    /* IRQ 10 through the I/O APIC, level-triggered: delivered again after
     * each EOI while the line stays up. */
    pic_remap(0xFF, 0xFF);
    idt_set_handler(0x6A, on_irq10);
    ioapic_write(0x11 + 2 * 10, 0);
    ioapic_write(0x10 + 2 * 10, 0x8000 | 0x6A);
    outb(0x200A, 1);
    sti();
    for (volatile int i = 0; i < 1000; i++)
        ;
    cli();
    ioapic_write(0x10 + 2 * 10, 0x10000);
    printf("IRQ 10 level through the I/O APIC: %u deliveries until dropped\n", irq10);

    /* Scratch memory: widths, a string copy, a read-modify-write. */
    volatile uint32_t *m32 = (volatile uint32_t *)IOMEM;
    m32[0] = 0xDEADBEEF;
    *(volatile uint16_t *)(IOMEM + 6) = 0x1234;
    IOMEM[9] = 0x56;
    printf("iomem: %08x %08x %08x\n", m32[0], m32[1], m32[2]);
    static const char msg[] = "through MMIO";
    uint32_t n = sizeof msg;
    void *dst = (void *)(IOMEM + 0x1FF8);
    const void *src = msg;
    __asm__ volatile("cld; rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
    char back[sizeof msg];
    for (uint32_t i = 0; i < sizeof msg; i++)
        back[i] = (char)IOMEM[0x1FF8 + i];
    check(memcmp(back, msg, sizeof msg) == 0, "rep movsb into iomem across a page");
    __asm__ volatile("addl $0x10, (%0)" : : "r"(IOMEM) : "memory");
    printf("after add: %08x\n", m32[0]);
    check(IOMEM[(2 << 20) - 1] == 0, "the last byte reads zero");

    printf("%s\n", failures ? "testdev: FAIL" : "testdev: all ok");
    return failures ? EXIT_FAIL : EXIT_OK;
}
