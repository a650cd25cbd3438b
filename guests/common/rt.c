/*
 * Runtime for the ringback test kernels: COM1 (16550) output, a small
 * printf (%s %d %u %x %c with optional zero padding/width), exit through
 * QEMU's isa-debug-exit port 0xF4, and the flat GDT (ring 0 and ring 3
 * code/data plus one TSS) and 256-entry IDT used by every kernel.
 * Interrupts land in isr.S stubs which call isr_dispatch() here.
 */
#include "rt.h"

#define COM1 0x3F8

struct tss kernel_tss;

static uint64_t gdt[6];
static uint64_t idt[256];
static isr_handler_t handlers[256];

/* Kernel stack used on entry from ring 3 (TSS esp0); separate from the
 * boot stack so user_run's saved frame is never overwritten. */
static uint8_t ring0_stack[8192] __attribute__((aligned(16)));

void serial_init(void)
{
    outb(COM1 + 1, 0x00); /* no UART interrupts: we poll */
    outb(COM1 + 3, 0x80); /* DLAB on to set the divisor */
    outb(COM1 + 0, 0x01); /* divisor 1 = 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1, DLAB off */
    outb(COM1 + 2, 0xC7); /* enable and clear FIFOs */
    outb(COM1 + 4, 0x03); /* DTR, RTS */
}

void putc(char c)
{
    /* Wait for THRE (transmit holding register empty) before each byte. */
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (uint8_t)c);
}

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void put_num(uint32_t v, unsigned base, int width, char pad, int neg)
{
    char buf[12];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        buf[n++] = '-';
    while (width-- > n)
        putc(pad);
    while (n)
        putc(buf[--n]);
}

void printf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putc(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            puts(s ? s : "(null)");
            break;
        }
        case 'd': {
            int32_t v = __builtin_va_arg(ap, int32_t);
            put_num(v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v, 10, width, pad, v < 0);
            break;
        }
        case 'u':
            put_num(__builtin_va_arg(ap, uint32_t), 10, width, pad, 0);
            break;
        case 'x':
            put_num(__builtin_va_arg(ap, uint32_t), 16, width, pad, 0);
            break;
        case 'c':
            putc((char)__builtin_va_arg(ap, int));
            break;
        case '%':
            putc('%');
            break;
        case 0:
            fmt--; /* lone '%' at the end: stop cleanly */
            break;
        default:
            putc('%');
            putc(*fmt);
        }
    }
    __builtin_va_end(ap);
}

void exit_qemu(uint32_t code)
{
    outl(0xF4, code);
    /* Not under QEMU (or the device is missing): stop here for good. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

static uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t gran)
{
    uint64_t d = limit & 0xFFFF;
    d |= (uint64_t)(base & 0xFFFFFF) << 16;
    d |= (uint64_t)access << 40;
    d |= (uint64_t)((limit >> 16) & 0xF) << 48;
    d |= (uint64_t)(gran & 0xF0) << 48;
    d |= (uint64_t)(base >> 24) << 56;
    return d;
}

void tss_set_esp0(uint32_t esp0) { kernel_tss.esp0 = esp0; }

void gdt_init(void)
{
    gdt[0] = 0;
    gdt[1] = seg_desc(0, 0xFFFFF, 0x9A, 0xC0); /* ring 0 code, 4 GiB, 32-bit */
    gdt[2] = seg_desc(0, 0xFFFFF, 0x92, 0xC0); /* ring 0 data */
    gdt[3] = seg_desc(0, 0xFFFFF, 0xFA, 0xC0); /* ring 3 code */
    gdt[4] = seg_desc(0, 0xFFFFF, 0xF2, 0xC0); /* ring 3 data */
    memset(&kernel_tss, 0, sizeof kernel_tss);
    kernel_tss.ss0 = SEL_KDATA;
    kernel_tss.esp0 = (uint32_t)(ring0_stack + sizeof ring0_stack);
    kernel_tss.iomap_base = sizeof kernel_tss; /* no I/O bitmap: ring 3 port I/O faults */
    gdt[5] = seg_desc((uint32_t)&kernel_tss, sizeof kernel_tss - 1, 0x89, 0x00); /* 32-bit TSS, available */

    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) gdtr = {sizeof gdt - 1, (uint32_t)gdt};
    __asm__ volatile("lgdt %0\n\t"
                     "ljmp %1, $1f\n"
                     "1:\n\t"
                     "movw %w2, %%ax\n\t"
                     "movw %%ax, %%ds\n\t"
                     "movw %%ax, %%es\n\t"
                     "movw %%ax, %%fs\n\t"
                     "movw %%ax, %%gs\n\t"
                     "movw %%ax, %%ss\n\t"
                     "movw %w3, %%ax\n\t"
                     "ltr %%ax"
                     :
                     : "m"(gdtr), "i"(SEL_KCODE), "i"(SEL_KDATA), "i"(SEL_TSS)
                     : "eax", "memory");
}

static void set_gate(int v, uint32_t off, int dpl)
{
    /* 32-bit interrupt gate (type 0xE): IF is cleared on entry. */
    idt[v] = (off & 0xFFFF) | ((uint64_t)SEL_KCODE << 16) | ((uint64_t)(0x8E | (dpl << 5)) << 40) |
             ((uint64_t)(off >> 16) << 48);
}

void idt_init(void)
{
    for (int v = 0; v < 256; v++) {
        set_gate(v, (uint32_t)isr_stubs + 16 * v, 0);
        handlers[v] = 0;
    }
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) idtr = {sizeof idt - 1, (uint32_t)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

void idt_set_handler(int vector, isr_handler_t fn) { handlers[vector] = fn; }

void idt_set_dpl(int vector, int dpl) { set_gate(vector, (uint32_t)isr_stubs + 16 * vector, dpl); }

void isr_dispatch(struct regs *r)
{
    isr_handler_t h = handlers[r->vector & 0xFF];
    if (h) {
        h(r);
        return;
    }
    printf("unexpected interrupt: vector %u err %x eip %08x cs %x cr2 %08x\n", r->vector, r->err, r->eip, r->cs,
           read_cr2());
    exit_qemu(EXIT_UNEXPECTED);
}

void rt_init(void)
{
    serial_init();
    gdt_init();
    idt_init();
}

/* The optimize attribute stops gcc from turning these loops back into
 * calls to themselves. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

__attribute__((optimize("no-tree-loop-distribute-patterns"))) void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

void pic_remap(uint8_t master_mask, uint8_t slave_mask)
{
    outb(0x20, 0x11); /* ICW1: edge, cascade, ICW4 follows */
    outb(0xA0, 0x11);
    outb(0x21, 0x20); /* ICW2: master vectors 0x20-0x27 */
    outb(0xA1, 0x28); /* slave vectors 0x28-0x2F */
    outb(0x21, 0x04); /* ICW3: slave on IRQ2 */
    outb(0xA1, 0x02); /* slave identity 2 */
    outb(0x21, 0x01); /* ICW4: 8086 mode, normal EOI */
    outb(0xA1, 0x01);
    outb(0x21, master_mask);
    outb(0xA1, slave_mask);
}
