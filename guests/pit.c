/*
 * pit: checks the 8259A PICs and the 8253/8254 PIT.  Remaps the PICs to
 * vectors 0x20/0x28, programs PIT channel 0 in mode 2 at 1000 Hz, unmasks
 * only IRQ0 and waits with "sti; hlt" until the IRQ0 handler (which sends
 * EOI) has counted 50 ticks.  Then it masks IRQ0, checks no further ticks
 * arrive, and reads channel 0 with the counter-latch command to check the
 * count is in range and goes down.  Exit 0 on success.
 */
#include "common/rt.h"

#define PIT_HZ 1193182u
#define TARGET 50

static volatile uint32_t ticks;

static void irq0(struct regs *r)
{
    (void)r;
    ticks++;
    outb(0x20, 0x20); /* non-specific EOI to the master PIC */
}

static uint16_t pit_latch_read(void)
{
    outb(0x43, 0x00); /* counter latch command, channel 0 */
    uint8_t lo = inb(0x40);
    uint8_t hi = inb(0x40);
    return (uint16_t)(lo | (hi << 8));
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("pit test\n");
    idt_set_handler(0x20, irq0);
    pic_remap(0xFF, 0xFF); /* everything masked for now */

    uint16_t divisor = (uint16_t)((PIT_HZ + 500) / 1000); /* 1193 */
    outb(0x43, 0x34); /* channel 0, lobyte/hibyte, mode 2, binary */
    outb(0x40, divisor & 0xFF);
    outb(0x40, divisor >> 8);
    printf("pit channel 0: mode 2, divisor %u (1000 Hz)\n", divisor);

    outb(0x21, 0xFE); /* unmask IRQ0 only */
    while (ticks < TARGET)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    outb(0x21, 0xFF);
    printf("ticks: %u\n", ticks);
    uint32_t seen = ticks;

    /* IRQ0 is masked: interrupts on for a while must not add ticks. */
    sti();
    for (volatile int i = 0; i < 200000; i++)
        ;
    cli();
    if (ticks != seen) {
        puts("FAIL ticks arrived while IRQ0 was masked\n");
        return EXIT_FAIL;
    }
    puts("masked IRQ0 delivers no ticks: ok\n");

    /* Latch reads: values must lie in 1..divisor and, once the count
     * changes, it must have moved down (modulo one reload). */
    uint16_t c1 = pit_latch_read(), c2 = c1;
    for (int i = 0; i < 1000000 && c2 == c1; i++)
        c2 = pit_latch_read();
    if (c1 == 0 || c1 > divisor || c2 == 0 || c2 > divisor) {
        printf("FAIL latched count out of range\n");
        return EXIT_FAIL;
    }
    if (c2 == c1) {
        puts("FAIL latched count never changed\n");
        return EXIT_FAIL;
    }
    uint32_t down = (c1 + divisor - c2) % divisor;
    if (down == 0 || down > divisor / 2) {
        puts("FAIL counter does not count down\n");
        return EXIT_FAIL;
    }
    puts("latched counter counts down: ok\n");
    return EXIT_OK;
}
