/*
 * echo: checks serial input through the UART receive interrupt.  Remaps
 * the PICs to 0x20/0x28, enables the 16550's received-data interrupt (IER
 * bit 0, with MCR.OUT2 gating the IRQ line as on a PC), unmasks IRQ4 and
 * waits with "sti; hlt".  The IRQ4 handler drains the receive FIFO into a
 * line buffer; each complete line is echoed back as "echo: <line>".  A
 * line "quit" ends the test with exit code 0.
 */
#include "common/rt.h"

#define COM1 0x3F8

static volatile char line[128];
static volatile uint32_t len;
static volatile uint32_t complete;
static volatile uint32_t irqs;

static void irq4(struct regs *r)
{
    (void)r;
    irqs++;
    while (inb(COM1 + 5) & 0x01) { /* LSR.DR: a byte is waiting */
        char c = (char)inb(COM1);
        if (complete)
            continue; /* the main loop has not taken the last line yet */
        if (c == '\n' || c == '\r') {
            line[len] = 0;
            complete = 1;
        } else if (len < sizeof(line) - 1) {
            line[len++] = c;
        }
    }
    outb(0x20, 0x20);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    pic_remap(0xEF, 0xFF); /* only IRQ4 (COM1) */
    idt_set_handler(0x24, irq4);
    outb(COM1 + 4, 0x0B); /* DTR, RTS, OUT2: let the UART drive IRQ4 */
    outb(COM1 + 1, 0x01); /* IER: received data available */
    puts("echo ready\n");
    for (;;) {
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        if (!complete)
            continue;
        printf("echo: %s\n", (const char *)line);
        if (len == 4 && line[0] == 'q' && line[1] == 'u' && line[2] == 'i' && line[3] == 't') {
            printf("echo done after %u receive interrupts\n", irqs);
            return EXIT_OK;
        }
        len = 0;
        complete = 0;
    }
}
