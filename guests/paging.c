/*
 * paging: checks 32-bit two-level paging.  Identity-maps 0-4 MiB with one
 * page table of 4 KiB pages and 4-8 MiB with a single 4 MiB page (CR4.PSE),
 * then checks: an alias of a physical page at 0x40000000 sees writes both
 * ways; a 4 MiB alias does too; the CPU sets the accessed and dirty bits in
 * PTEs and in a 4 MiB PDE (and accessed in a page-table PDE); with CR0.WP=1
 * a supervisor write to a read-only page faults with error code 0x3 and
 * with WP=0 it succeeds; INVLPG after changing a PTE makes the new mapping
 * visible.  One "ok ..." line per check, "FAIL ..." and exit 1 otherwise.
 */
#include "common/rt.h"

#define PG_P 0x001
#define PG_RW 0x002
#define PG_A 0x020
#define PG_D 0x040
#define PG_PS 0x080
#define CR0_PG 0x80000000u
#define CR0_WP 0x00010000u
#define CR4_PSE 0x10u

#define ALIAS_VA 0x40000000u   /* PDE 256, covered by alias_pt */
#define BIGALIAS_VA 0x40400000u /* PDE 257: 4 MiB page onto 4-8 MiB */

static volatile uint32_t page_dir[1024] __attribute__((aligned(4096)));
static volatile uint32_t low_pt[1024] __attribute__((aligned(4096)));
static volatile uint32_t alias_pt[1024] __attribute__((aligned(4096)));
static volatile uint8_t page_a[4096] __attribute__((aligned(4096)));
static volatile uint8_t page_b[4096] __attribute__((aligned(4096)));
static volatile uint8_t ad_page[4096] __attribute__((aligned(4096)));
static volatile uint8_t ro_page[4096] __attribute__((aligned(4096)));

static int failures;
static volatile int pf_count;
static volatile uint32_t pf_err, pf_cr2;

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok)
        failures++;
}

static volatile uint32_t *pte_of(volatile void *p) { return &low_pt[((uint32_t)p >> 12) & 0x3FF]; }

/* Only the WP check expects a fault: record it and make the page writable
 * so the faulting write completes when we return. */
static void page_fault(struct regs *r)
{
    uint32_t cr2 = read_cr2();
    if (cr2 != (uint32_t)ro_page) {
        printf("FAIL unexpected page fault cr2 %08x err %x eip %08x\n", cr2, r->err, r->eip);
        exit_qemu(EXIT_FAIL);
    }
    pf_count++;
    pf_err = r->err;
    pf_cr2 = cr2;
    *pte_of(ro_page) |= PG_RW;
    invlpg(cr2);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("paging test\n");
    idt_set_handler(14, page_fault);

    for (uint32_t i = 0; i < 1024; i++) {
        low_pt[i] = (i << 12) | PG_P | PG_RW;
        alias_pt[i] = 0;
        page_dir[i] = 0;
    }
    page_dir[0] = (uint32_t)low_pt | PG_P | PG_RW;
    page_dir[1] = 0x400000u | PG_PS | PG_P | PG_RW;
    page_dir[ALIAS_VA >> 22] = (uint32_t)alias_pt | PG_P | PG_RW;
    page_dir[BIGALIAS_VA >> 22] = 0x400000u | PG_PS | PG_P | PG_RW;
    alias_pt[0] = (uint32_t)page_a | PG_P | PG_RW;

    write_cr4(read_cr4() | CR4_PSE);
    write_cr3((uint32_t)page_dir);
    write_cr0(read_cr0() | CR0_PG);
    check((read_cr0() & CR0_PG) != 0, "paging enabled, still running from the identity map");

    /* Two virtual addresses for one physical page. */
    volatile uint32_t *va = (volatile uint32_t *)(ALIAS_VA + 0x10);
    volatile uint32_t *pa = (volatile uint32_t *)(page_a + 0x10);
    *va = 0xCAFEBABE;
    check(*pa == 0xCAFEBABE, "write through 0x40000010 visible through the identity map");
    *pa = 0x12345678;
    check(*va == 0x12345678, "write through the identity map visible through 0x40000010");

    volatile uint32_t *big_id = (volatile uint32_t *)0x00501234;
    volatile uint32_t *big_al = (volatile uint32_t *)(BIGALIAS_VA + 0x101234);
    *big_id = 0xA5A5F00D;
    check(*big_al == 0xA5A5F00D, "4 MiB page: write at 0x00501234 visible at 0x40501234");
    *big_al = 0x0BADCAFE;
    check(*big_id == 0x0BADCAFE, "4 MiB page: write at 0x40501234 visible at 0x00501234");

    /* Accessed/dirty bits of a 4 KiB PTE. */
    volatile uint32_t *pte = pte_of(ad_page);
    *pte &= ~(uint32_t)(PG_A | PG_D);
    invlpg((uint32_t)ad_page);
    (void)ad_page[100];
    barrier();
    check((*pte & (PG_A | PG_D)) == PG_A, "PTE: read sets accessed, leaves dirty clear");
    ad_page[100] = 1;
    barrier();
    check((*pte & (PG_A | PG_D)) == (PG_A | PG_D), "PTE: write sets dirty");

    /* Accessed/dirty bits of a 4 MiB PDE. */
    page_dir[1] &= ~(uint32_t)(PG_A | PG_D);
    invlpg(0x400000);
    (void)*(volatile uint32_t *)0x400100;
    barrier();
    check((page_dir[1] & (PG_A | PG_D)) == PG_A, "4 MiB PDE: read sets accessed, leaves dirty clear");
    *(volatile uint32_t *)0x400100 = 7;
    barrier();
    check((page_dir[1] & (PG_A | PG_D)) == (PG_A | PG_D), "4 MiB PDE: write sets dirty");

    /* Accessed bit of a PDE that points to a page table: code fetch and
     * stack use after a full TLB flush go through it. */
    page_dir[0] &= ~(uint32_t)PG_A;
    write_cr3((uint32_t)page_dir);
    (void)ad_page[0];
    barrier();
    check((page_dir[0] & PG_A) != 0, "page-table PDE: accessed set after TLB flush");

    /* CR0.WP: supervisor writes to read-only pages. */
    volatile uint32_t *ro = (volatile uint32_t *)ro_page;
    *pte_of(ro_page) &= ~(uint32_t)PG_RW;
    invlpg((uint32_t)ro_page);
    write_cr0(read_cr0() | CR0_WP);
    *ro = 0x11111111;
    barrier();
    check(pf_count == 1 && pf_err == 0x3 && pf_cr2 == (uint32_t)ro_page && *ro == 0x11111111,
          "WP=1: supervisor write to read-only page faults with error code 0x3, cr2 = page");
    *pte_of(ro_page) &= ~(uint32_t)PG_RW;
    invlpg((uint32_t)ro_page);
    write_cr0(read_cr0() & ~CR0_WP);
    *ro = 0x22222222;
    barrier();
    check(pf_count == 1 && *ro == 0x22222222, "WP=0: supervisor write to read-only page succeeds");
    check((*pte_of(ro_page) & PG_RW) == 0, "WP=0: the PTE stayed read-only");

    /* INVLPG: retarget the alias to page_b after the old entry was used. */
    page_b[0x20] = 0xBB;
    page_a[0x20] = 0xAA;
    volatile uint8_t *alias = (volatile uint8_t *)ALIAS_VA;
    check(alias[0x20] == 0xAA, "alias reads page A before the PTE change");
    alias_pt[0] = (uint32_t)page_b | PG_P | PG_RW;
    invlpg(ALIAS_VA);
    check(alias[0x20] == 0xBB, "after PTE change and INVLPG the alias reads page B");

    if (failures) {
        printf("FAIL %d check(s) failed\n", failures);
        return EXIT_FAIL;
    }
    puts("paging: all checks passed\n");
    return EXIT_OK;
}
