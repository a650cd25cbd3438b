/*
 * pagefault: checks #PF delivery and restart.  With paging on, the kernel
 * reads a not-present page and writes another one; ring 3 code then reads
 * a not-present page and writes a present read-only user page.  Each time
 * the #PF handler prints CR2, the error code and the privilege level it
 * came from, fixes the mapping and returns, and the faulting instruction
 * is restarted and completes (values are checked afterwards).  Expected
 * error codes: 0x0, 0x2, 0x4, 0x7.  Exit 0 when everything matched.
 */
#include "common/rt.h"

#define PG_P 0x001
#define PG_RW 0x002
#define PG_US 0x004

static volatile uint32_t page_dir[1024] __attribute__((aligned(4096)));
static volatile uint32_t low_pt[1024] __attribute__((aligned(4096)));
static volatile uint32_t kread_page[1024] __attribute__((aligned(4096)));
static volatile uint32_t kwrite_page[1024] __attribute__((aligned(4096)));
static volatile uint32_t uread_page[1024] __attribute__((aligned(4096)));
static volatile uint32_t uro_page[1024] __attribute__((aligned(4096)));
static uint8_t user_stack[4096] __attribute__((aligned(4096)));

static volatile uint32_t fault_log[8];
static volatile int faults;

static volatile uint32_t *pte_of(volatile void *p) { return &low_pt[((uint32_t)p >> 12) & 0x3FF]; }

static void page_fault(struct regs *r)
{
    uint32_t cr2 = read_cr2();
    printf("#PF: cr2 %08x err 0x%x from ring %u\n", cr2, r->err, r->cs & 3);
    if (faults >= 8 || (cr2 & ~0xFFFu) == 0) {
        puts("FAIL too many or bogus page faults\n");
        exit_qemu(EXIT_FAIL);
    }
    fault_log[faults++] = r->err;
    /* Not present: map it; present (protection fault): make it writable. */
    if (r->err & 1)
        *pte_of((void *)cr2) |= PG_RW;
    else
        *pte_of((void *)cr2) |= PG_P | PG_RW | PG_US;
    invlpg(cr2);
}

static void syscall_exit(struct regs *r) { user_return(r->ebx); }

/* Runs in ring 3: only memory accesses and int $0x80, no port I/O. */
static __attribute__((used, noinline)) void user_main(void)
{
    uint32_t v = uread_page[3]; /* not present: err 0x4 */
    uro_page[5] = v + 1;        /* present, read-only: err 0x7 */
    __asm__ volatile("int $0x80" : : "a"(2), "b"(v));
    for (;;)
        ;
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    int bad = 0;
    puts("pagefault test\n");
    idt_set_handler(14, page_fault);
    idt_set_handler(0x80, syscall_exit);
    idt_set_dpl(0x80, 3);

    kread_page[1] = 0x5A5A1234;
    uread_page[3] = 0x00C0FFEE;
    /* Everything user-accessible so ring 3 can run the kernel's code. */
    for (uint32_t i = 0; i < 1024; i++) {
        low_pt[i] = (i << 12) | PG_P | PG_RW | PG_US;
        page_dir[i] = 0;
    }
    page_dir[0] = (uint32_t)low_pt | PG_P | PG_RW | PG_US;
    *pte_of(kread_page) = (uint32_t)kread_page | PG_RW | PG_US;  /* not present */
    *pte_of(kwrite_page) = (uint32_t)kwrite_page | PG_RW | PG_US; /* not present */
    *pte_of(uread_page) = (uint32_t)uread_page | PG_RW | PG_US;  /* not present */
    *pte_of(uro_page) = (uint32_t)uro_page | PG_P | PG_US;       /* read-only */
    write_cr3((uint32_t)page_dir);
    write_cr0(read_cr0() | 0x80000000u);
    puts("paging on\n");

    printf("kernel read of not-present page %08x\n", (uint32_t)&kread_page[1]);
    uint32_t v = kread_page[1];
    printf("read completed: %08x\n", v);
    if (v != 0x5A5A1234)
        bad++;

    printf("kernel write to not-present page %08x\n", (uint32_t)&kwrite_page[2]);
    kwrite_page[2] = 0xFEEDFACE;
    barrier();
    printf("write completed: %08x\n", kwrite_page[2]);
    if (kwrite_page[2] != 0xFEEDFACE)
        bad++;

    puts("entering ring 3\n");
    uint32_t ret = user_run((uint32_t)user_main, (uint32_t)(user_stack + sizeof user_stack), 0x002);
    printf("ring 3 exited with %08x, read-only page now holds %08x\n", ret, uro_page[5]);
    if (ret != 0x00C0FFEE || uro_page[5] != 0x00C0FFEF)
        bad++;

    static const uint32_t want[4] = {0x0, 0x2, 0x4, 0x7};
    if (faults != 4)
        bad++;
    for (int i = 0; i < 4 && i < faults; i++)
        if (fault_log[i] != want[i])
            bad++;
    if (bad) {
        printf("FAIL %d problem(s), %d faults\n", bad, faults);
        return EXIT_FAIL;
    }
    puts("pagefault: all faults handled as expected\n");
    return EXIT_OK;
}
