/*
 * patchbugs: one section per patch-bug class the raw engine can inject,
 * each printing a checksum that the bug changes.  Without an injected bug
 * every engine prints the same four lines; with one, its line differs.
 *   A  CLI; PUSHF inside a CLI patch region: the PUSHF patch must push the
 *      guest's IF (0), not the ring-1 IF (1).               (pushf-leak)
 *   B  STI with a timer interrupt pending: the interrupt is taken after the
 *      instruction following STI, never right after STI.   (sti-shadow)
 *   C  a jump table into code holding MOV r/m,CS on a page already scanned
 *      from elsewhere: the scanner must scan the new entry. (scan-miss)
 *   D  code rewritten after it was patched: the old patch must not run.
 *                                                          (stale-patch)
 *   E  a call into the middle of a block whose MOV r/m,CS is patched: the
 *      new block starting there must carry the patch too.
 * All sections run with IF set, so ring-0 code runs raw.
 * A number on the command line first runs that many rounds (about a million
 * instructions each) of plain integer work, so the bugs fire late in a long
 * run: the bisect benchmark's guest.
 */
#include "common/rt.h"

static uint32_t section_a(void)
{
    uint32_t sum = 0;
    for (int i = 0; i < 100; i++) {
        uint32_t fl;
        __asm__ volatile("cli\n\t"
                         "pushfl\n\t"
                         "popl %0\n\t"
                         "sti"
                         : "=r"(fl)
                         :
                         : "memory");
        sum = sum * 3 + (fl & 0x3200);
    }
    return sum;
}

static volatile uint32_t irqs, irq_sum;

static void irq0(struct regs *r)
{
    irqs++;
    irq_sum = irq_sum * 31 + r->eip;
    outb(0x20, 0x20);
}

static uint32_t section_b(void)
{
    idt_set_handler(0x20, irq0);
    outb(0x43, 0x34); /* PIT channel 0, mode 2, divisor 100 */
    outb(0x40, 100);
    outb(0x40, 0);
    outb(0x21, 0xFE); /* IRQ0 only */
    for (int i = 0; i < 300; i++)
        __asm__ volatile("cli\n\t"
                         "movl $3000, %%ecx\n"
                         "1:\n\t"
                         "loop 1b\n\t"
                         "sti\n\t"
                         "nop\n\t"
                         "nop"
                         :
                         :
                         : "ecx", "memory");
    outb(0x21, 0xFF);
    return irq_sum;
}

/* jt_dispatch(k): jumps through a table; case 2 reads CS. */
uint32_t jt_dispatch(uint32_t k) __attribute__((regparm(1)));
__asm__(".text\n"
        ".globl jt_dispatch\n"
        "jt_dispatch:\n\t"
        "andl $3, %eax\n\t"
        "jmp *jt_table(,%eax,4)\n"
        "jt_case0:\n\t"
        "movl $100, %eax\n\t"
        "ret\n"
        "jt_case1:\n\t"
        "movl $200, %eax\n\t"
        "ret\n"
        "jt_case2:\n\t"
        "movl %cs, %eax\n\t"
        "ret\n"
        "jt_case3:\n\t"
        "movl $300, %eax\n\t"
        "ret\n"
        ".section .rodata\n"
        ".align 4\n"
        "jt_table:\n\t"
        ".long jt_case0, jt_case1, jt_case2, jt_case3\n"
        ".text\n");

static uint32_t section_c(void)
{
    uint32_t sum = 0;
    for (uint32_t k = 0; k < 40; k++)
        sum = sum * 7 + jt_dispatch(k);
    return sum;
}

/* mov eax, cs; ret - rewritten below to mov eax, ds; ret. */
static uint8_t code[16] __attribute__((aligned(16))) = {0x8C, 0xC8, 0xC3};

static uint32_t section_d(void)
{
    uint32_t (*fn)(void) = (uint32_t (*)(void))(uintptr_t)code;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i++)
        sum = sum * 5 + fn();
    code[1] = 0xD8;
    __asm__ volatile("" ::: "memory");
    for (int i = 0; i < 20; i++)
        sum = sum * 5 + fn();
    return sum;
}

/* e_func falls through into e_mid, so one block holds both; e_mid is
 * also called directly. */
uint32_t e_func(void);
uint32_t e_mid(void);
__asm__(".text\n"
        ".globl e_func, e_mid\n"
        "e_func:\n\t"
        "movl $1, %edx\n"
        "e_mid:\n\t"
        "movl %cs, %eax\n\t"
        "ret\n");

static uint32_t section_e(void)
{
    uint32_t sum = 0;
    for (int i = 0; i < 10; i++)
        sum = sum * 9 + e_func();
    for (int i = 0; i < 10; i++)
        sum = sum * 9 + e_mid();
    return sum;
}

/* About a million instructions per round, none of them sensitive. */
static uint32_t warmup(uint32_t rounds)
{
    uint32_t x = 1;
    for (uint32_t r = 0; r < rounds; r++)
        for (uint32_t i = 0; i < 200000; i++)
            x = x * 1103515245u + 12345u + (x >> 7);
    return x;
}

static uint32_t cmdline_number(struct multiboot_info *mbi)
{
    if (!(mbi->flags & (1 << 2)))
        return 0;
    const char *s = (const char *)mbi->cmdline;
    while (*s && *s != ' ')
        s++;
    while (*s == ' ')
        s++;
    uint32_t n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (uint32_t)(*s++ - '0');
    return n;
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    pic_remap(0xFF, 0xFF);
    sti();
    uint32_t rounds = cmdline_number(mbi);
    if (rounds)
        printf("warmup: %u rounds, %08x\n", rounds, warmup(rounds));
    uint32_t a = section_a();
    uint32_t b = section_b();
    uint32_t irq_count = irqs;
    uint32_t c = section_c();
    uint32_t d = section_d();
    uint32_t e = section_e();
    cli();
    printf("A pushf in cli: %08x\n", a);
    printf("B sti shadow: %08x (%u interrupts)\n", b, irq_count);
    printf("C jump table: %08x\n", c);
    printf("D rewritten code: %08x\n", d);
    printf("E call into a patched block: %08x\n", e);
    return EXIT_OK;
}
