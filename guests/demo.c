/*
 * demo: ringback's showcase kernel.  Enables paging with three page
 * tables (identity 0-4 MiB and 4-8 MiB, plus a ring 3 stack and data page
 * at 0x40000000), remaps the PICs and runs the PIT at 100 Hz, then starts
 * a ring 3 task that talks to the kernel through int $0x80: write (1),
 * get_ticks (3) and exit (2).  The task greets, waits five timer ticks by
 * polling get_ticks (so IRQ0 arrives while in ring 3), computes a small
 * result and exits.  The kernel narrates on COM1.  Only the printed tick
 * count depends on timing; everything else is deterministic.
 */
#include "common/rt.h"

#define PG_P 0x001
#define PG_RW 0x002
#define PG_US 0x004
#define USER_BASE 0x40000000u

enum { SYS_WRITE = 1, SYS_EXIT = 2, SYS_TICKS = 3 };

static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t pt_low[1024] __attribute__((aligned(4096)));
static uint32_t pt_high[1024] __attribute__((aligned(4096)));
static uint32_t pt_user[1024] __attribute__((aligned(4096)));
static uint8_t user_stack_phys[4096] __attribute__((aligned(4096)));
static uint8_t user_data_phys[4096] __attribute__((aligned(4096)));

static volatile uint32_t ticks;
static uint32_t writes;

static void irq0(struct regs *r)
{
    (void)r;
    ticks++;
    outb(0x20, 0x20);
}

static uint32_t sys(uint32_t nr, uint32_t arg)
{
    uint32_t ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(arg) : "memory");
    return ret;
}

/* --- ring 3 task: no kernel calls, only sys() --- */

static char *u_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *u_dec(char *p, uint32_t v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static __attribute__((used, noinline)) void task(void)
{
    char *buf = (char *)(USER_BASE + 0x1000); /* the task's own data page */
    char *p;
    uint32_t sp;
    __asm__ volatile("mov %%esp, %0" : "=r"(sp));

    sys(SYS_WRITE, (uint32_t) "hello, I am running in ring 3");
    p = u_str(buf, "my stack is in page ");
    p = u_dec(p, sp >> 12);
    p = u_str(p, " (0x40000000 is page 262144)");
    *p = 0;
    sys(SYS_WRITE, (uint32_t)buf);

    uint32_t t0 = sys(SYS_TICKS, 0);
    while (sys(SYS_TICKS, 0) < t0 + 5)
        ;
    sys(SYS_WRITE, (uint32_t) "I waited for 5 timer ticks while the kernel counted them");

    uint32_t sum = 0;
    for (uint32_t n = 2; n < 1000; n++) {
        uint32_t d = 2;
        while (d * d <= n && n % d)
            d++;
        if (d * d > n)
            sum += n;
    }
    p = u_str(buf, "the primes below 1000 add up to ");
    p = u_dec(p, sum);
    *p = 0;
    sys(SYS_WRITE, (uint32_t)buf);
    sys(SYS_WRITE, (uint32_t) "goodbye");
    sys(SYS_EXIT, sum == 76127 ? 0 : 1);
    for (;;)
        ;
}

/* --- kernel --- */

static void syscall_handler(struct regs *r)
{
    switch (r->eax) {
    case SYS_WRITE:
        writes++;
        printf("ring 3 task says: %s\n", (const char *)r->ebx);
        r->eax = 0;
        break;
    case SYS_TICKS:
        r->eax = ticks;
        break;
    case SYS_EXIT:
        user_return(r->ebx);
    default:
        r->eax = (uint32_t)-1;
    }
}

static void page_fault(struct regs *r)
{
    printf("page fault at %08x, error code %x, eip %08x: stopping\n", read_cr2(), r->err, r->eip);
    exit_qemu(EXIT_FAIL);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)mbi;
    printf("ringback demo kernel: booted by a multiboot loader (magic %08x)\n", magic);
    idt_set_handler(0x20, irq0);
    idt_set_handler(0x80, syscall_handler);
    idt_set_dpl(0x80, 3);
    idt_set_handler(14, page_fault);

    for (uint32_t i = 0; i < 1024; i++) {
        /* The task's code lives in the kernel image, so low memory is
         * user-accessible; 4-8 MiB stays supervisor-only. */
        pt_low[i] = (i << 12) | PG_P | PG_RW | PG_US;
        pt_high[i] = (0x400000u + (i << 12)) | PG_P | PG_RW;
        pt_user[i] = 0;
        page_dir[i] = 0;
    }
    pt_user[0] = (uint32_t)user_stack_phys | PG_P | PG_RW | PG_US;
    pt_user[1] = (uint32_t)user_data_phys | PG_P | PG_RW | PG_US;
    page_dir[0] = (uint32_t)pt_low | PG_P | PG_RW | PG_US;
    page_dir[1] = (uint32_t)pt_high | PG_P | PG_RW;
    page_dir[USER_BASE >> 22] = (uint32_t)pt_user | PG_P | PG_RW | PG_US;
    write_cr3((uint32_t)page_dir);
    write_cr0(read_cr0() | 0x80000000u | 0x00010000u); /* PG and WP */
    puts("ringback demo kernel: paging on, 3 page tables (0-4 MiB, 4-8 MiB, task pages at 0x40000000)\n");

    pic_remap(0xFE, 0xFF); /* IRQ0 only */
    uint16_t divisor = 11932; /* 1193182 Hz / 100 */
    outb(0x43, 0x34);
    outb(0x40, divisor & 0xFF);
    outb(0x40, divisor >> 8);
    puts("ringback demo kernel: PIC remapped to 0x20, PIT channel 0 at 100 Hz\n");

    sti();
    while (ticks < 2)
        __asm__ volatile("hlt");
    puts("ringback demo kernel: timer is ticking, starting the ring 3 task\n");

    /* IF=1 in the task so IRQ0 interrupts it in ring 3. */
    uint32_t code = user_run((uint32_t)task, USER_BASE + 0x1000, 0x202);
    printf("ringback demo kernel: task exited with code %u after %u writes\n", code, writes);
    cli();
    printf("tick count after task: %u\n", ticks);
    puts("ringback demo kernel: done\n");
    return code == 0 ? EXIT_OK : EXIT_FAIL;
}
