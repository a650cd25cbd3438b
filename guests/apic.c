/*
 * apic: the local APIC and the I/O APIC as a test kernel written for a PC
 * uses them, printing only what does not depend on how fast time passes,
 * so that its output can be diffed against QEMU's:
 *  - IA32_APIC_BASE, the version register, the state the firmware left;
 *  - self-IPIs (ICR shorthand and physical destination), taken highest
 *    class first, nested only by a higher class, retired by EOI;
 *  - the task priority holding back lower classes;
 *  - an IPI to an APIC that does not exist: the busy bit clears;
 *  - NMI IPIs: taken with interrupts off, the next held until IRET;
 *  - LVT masking, the timer in one-shot and periodic mode (and
 *    TSC-deadline mode where CPUID announces it);
 *  - the I/O APIC routing the PIT (IRQ 0, pin 2) and COM1 (IRQ 4) with the
 *    8259s masked.
 * Exit 0 when every check passed.
 */
#include "common/rt.h"

#define APIC 0xFEE00000u
#define IOAPIC 0xFEC00000u

#define ID 0x20
#define VER 0x30
#define TPR 0x80
#define EOI 0xB0
#define SVR 0xF0
#define ISR 0x100
#define IRR 0x200
#define ESR 0x280
#define ICR_LO 0x300
#define ICR_HI 0x310
#define LVT_TIMER 0x320
#define LVT_LINT0 0x350
#define LVT_ERROR 0x370
#define TIMER_INIT 0x380
#define TIMER_CUR 0x390
#define TIMER_DIV 0x3E0

static int failures;

static uint32_t apic_read(uint32_t reg) { return *(volatile uint32_t *)(APIC + reg); }
static void apic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t *)(APIC + reg) = v; }

static uint32_t ioapic_read(uint32_t reg)
{
    *(volatile uint32_t *)IOAPIC = reg;
    return *(volatile uint32_t *)(IOAPIC + 0x10);
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)IOAPIC = reg;
    *(volatile uint32_t *)(IOAPIC + 0x10) = v;
}

static void ioapic_route(int pin, uint32_t low)
{
    ioapic_write(0x11 + 2 * pin, 0); /* destination: APIC ID 0 */
    ioapic_write(0x10 + 2 * pin, low);
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static void cpuid1(uint32_t *ecx, uint32_t *edx)
{
    uint32_t a = 1, b, c, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
    *ecx = c;
    *edx = d;
}

static void check(int ok, const char *what)
{
    printf("%s: %s\n", what, ok ? "ok" : "FAIL");
    if (!ok)
        failures++;
}

static int bit_set(uint32_t base, int vector)
{
    return (apic_read(base + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

/* The order interrupts were taken in, and what the handlers saw. */
static volatile uint8_t taken[32];
static volatile int ntaken;
static volatile int nest_from; /* vector whose handler sends more IPIs */

static void self_ipi(int vector) { apic_write(ICR_LO, 0x40000 | vector); }

static void note(struct regs *r)
{
    if (ntaken < 32)
        taken[ntaken++] = (uint8_t)r->vector;
}

static void ipi_handler(struct regs *r)
{
    note(r);
    if ((int)r->vector == nest_from) {
        nest_from = 0;
        self_ipi(0x38); /* lower class: waits for this EOI */
        self_ipi(0x91); /* higher class: nests at the STI */
        sti();
        for (volatile int i = 0; i < 100; i++)
            ;
        cli();
    }
    apic_write(EOI, 0);
}

static void print_taken(const char *what)
{
    printf("%s:", what);
    for (int i = 0; i < ntaken; i++)
        printf(" %02x", taken[i]);
    printf("\n");
    ntaken = 0;
}

static void settle(void)
{
    sti();
    for (volatile int i = 0; i < 1000; i++)
        ;
    cli();
}

static volatile uint32_t timer_ticks;
static void timer_handler(struct regs *r)
{
    (void)r;
    timer_ticks++;
    apic_write(EOI, 0);
}

static volatile uint32_t pit_ticks;
static void pit_handler(struct regs *r)
{
    (void)r;
    pit_ticks++;
    apic_write(EOI, 0);
}

static volatile uint32_t uart_irqs;
static volatile uint8_t uart_iir;
static void uart_handler(struct regs *r)
{
    (void)r;
    uart_irqs++;
    uart_iir = inb(0x3F8 + 2) & 0x0F; /* reading IIR clears THRE */
    apic_write(EOI, 0);
}

static volatile uint32_t nmis, nmi_nested;
static volatile int in_nmi;
static void nmi_handler(struct regs *r)
{
    (void)r;
    if (in_nmi)
        nmi_nested++;
    in_nmi = 1;
    if (++nmis == 1) {
        /* A second NMI now waits for this handler's IRET. */
        apic_write(ICR_HI, 0);
        apic_write(ICR_LO, 0x400);
        for (volatile int i = 0; i < 1000; i++)
            ;
    }
    in_nmi = 0;
}

static volatile uint32_t spurious;
static void spurious_handler(struct regs *r)
{
    (void)r;
    spurious++; /* no EOI for the spurious vector */
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("apic test\n");
    pic_remap(0xFF, 0xFF);

    uint32_t ecx, edx;
    cpuid1(&ecx, &edx);
    check(edx & (1 << 9), "cpuid announces the APIC");
    uint64_t base = rdmsr(0x1B);
    printf("IA32_APIC_BASE: %08x\n", (uint32_t)base);
    printf("id %08x version %08x lint0 %08x\n", apic_read(ID), apic_read(VER), apic_read(LVT_LINT0));

    for (int v = 0x30; v < 0xA0; v++)
        idt_set_handler(v, ipi_handler);
    idt_set_handler(0xEF, spurious_handler);
    apic_write(SVR, 0x1EF);
    printf("svr %08x\n", apic_read(SVR));

    /* Three self-IPIs with interrupts off: taken highest class first. */
    cli();
    self_ipi(0x45);
    self_ipi(0x81);
    self_ipi(0x35);
    check(bit_set(IRR, 0x45) && bit_set(IRR, 0x81) && bit_set(IRR, 0x35), "three requests in IRR");
    settle();
    print_taken("taken");

    /* Physical destination 0 is this CPU. */
    apic_write(ICR_HI, 0);
    apic_write(ICR_LO, 0x52);
    settle();
    print_taken("physical destination 0");

    /* Nesting: the 0x60 handler sends 0x38 and 0x91 and enables
     * interrupts; 0x91 nests, 0x38 waits for the EOI of 0x60. */
    nest_from = 0x60;
    self_ipi(0x60);
    settle();
    print_taken("nested");

    /* Task priority 0x50 holds back classes 4 and 5. */
    apic_write(TPR, 0x50);
    self_ipi(0x48);
    self_ipi(0x57);
    self_ipi(0x66);
    settle();
    print_taken("TPR 0x50");
    printf("ppr %02x\n", apic_read(0xA0) & 0xFF);
    apic_write(TPR, 0x40);
    settle();
    print_taken("TPR 0x40");
    apic_write(TPR, 0);
    settle();
    print_taken("TPR 0");
    check(apic_read(ISR + 0x20) == 0 && apic_read(IRR + 0x20) == 0, "nothing left in service or requested");

    /* An IPI to APIC ID 5, which nobody has: the busy bit clears. */
    apic_write(ICR_HI, 5u << 24);
    apic_write(ICR_LO, 0x4070);
    int spins = 0;
    while ((apic_read(ICR_LO) & (1 << 12)) && spins < 1000000)
        spins++;
    check(spins < 1000000, "IPI to a missing CPU: delivery status goes idle");
    settle();
    print_taken("IPI to APIC 5");

    /* NMI to this CPU (physical destination 0), with interrupts off. */
    idt_set_handler(2, nmi_handler);
    cli();
    apic_write(ICR_HI, 0);
    apic_write(ICR_LO, 0x400);
    for (volatile int i = 0; i < 1000; i++)
        ;
    printf("NMI: %u taken with interrupts off, %u nested\n", nmis, nmi_nested);

    /* The timer, masked: it counts down and requests nothing. */
    idt_set_handler(0xA0, timer_handler);
    apic_write(TIMER_DIV, 0x0B); /* divide by 1 */
    apic_write(LVT_TIMER, 0x100A0);
    apic_write(TIMER_INIT, 20000);
    while (apic_read(TIMER_CUR) != 0)
        ;
    settle();
    check(timer_ticks == 0 && !bit_set(IRR, 0xA0), "masked one-shot timer: no interrupt");

    /* One-shot: one interrupt, the count stays at zero. */
    apic_write(LVT_TIMER, 0xA0);
    /* A count of seconds, so that even a host that stalls the guest for a
     * while reads it still counting; then one that ends soon. */
    apic_write(TIMER_INIT, 0xFFFFFFFF);
    uint32_t c1 = apic_read(TIMER_CUR);
    check(c1 > 0xF0000000u, "current count starts at the initial count");
    apic_write(TIMER_INIT, 2000000);
    while (timer_ticks == 0)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    for (volatile int i = 0; i < 20000; i++)
        ;
    settle();
    printf("one-shot: %u interrupt(s), current count %u\n", timer_ticks, apic_read(TIMER_CUR));

    /* Periodic, divided by 16: ten interrupts, then masked. */
    timer_ticks = 0;
    apic_write(TIMER_DIV, 0x03);
    apic_write(LVT_TIMER, 0x200A0);
    apic_write(TIMER_INIT, 5000);
    while (timer_ticks < 10)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    apic_write(LVT_TIMER, 0x300A0);
    settle(); /* a period that ended before the mask is still taken */
    uint32_t after = timer_ticks;
    for (volatile int i = 0; i < 100000; i++)
        ;
    settle();
    check(timer_ticks == after, "periodic timer: masking stops it");
    uint32_t p1 = apic_read(TIMER_CUR);
    check(p1 > 0 && p1 <= 5000, "periodic timer counts on while masked");
    apic_write(TIMER_INIT, 0);
    check(apic_read(TIMER_CUR) == 0, "initial count 0 stops it");

    /* TSC-deadline mode, where announced. */
    if (ecx & (1 << 24)) {
        timer_ticks = 0;
        apic_write(LVT_TIMER, 0x400A0);
        wrmsr(0x6E0, rdtsc() + 100000);
        while (timer_ticks == 0)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        check(rdmsr(0x6E0) == 0, "TSC deadline: fired and disarmed");
        apic_write(LVT_TIMER, 0x100A0);
    }

    /* The I/O APIC: version and pins, then the PIT through pin 2. */
    uint32_t ver = ioapic_read(1);
    printf("I/O APIC: %u pins\n", ((ver >> 16) & 0xFF) + 1);
    check((ioapic_read(0x10 + 2 * 2) & (1 << 16)) != 0, "I/O APIC pins start masked");
    idt_set_handler(0xB0, pit_handler);
    ioapic_route(2, 0xB0);
    outb(0x43, 0x34);
    outb(0x40, 0xA9); /* 1193: 1 kHz */
    outb(0x40, 0x04);
    while (pit_ticks < 5)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    ioapic_route(2, 0x100B0);
    settle(); /* a tick sent before the mask is still taken */
    uint32_t seen = pit_ticks;
    for (volatile int i = 0; i < 100000; i++)
        ;
    settle();
    check(seen >= 5 && pit_ticks == seen, "PIT through I/O APIC pin 2, then masked");

    /* COM1's transmitter-empty interrupt through pin 4. */
    idt_set_handler(0xB4, uart_handler);
    ioapic_route(4, 0xB4);
    outb(0x3F8 + 4, 0x0B); /* DTR, RTS, OUT2 */
    outb(0x3F8 + 1, 0x02); /* THRE interrupt */
    settle();
    outb(0x3F8 + 1, 0x00);
    ioapic_route(4, 0x100B4);
    printf("COM1 through pin 4: %u interrupt, IIR %x\n", uart_irqs, uart_iir);

    printf("spurious: %u\n", spurious);
    printf("%s\n", failures ? "apic: FAIL" : "apic: all ok");
    return failures ? EXIT_FAIL : EXIT_OK;
}
