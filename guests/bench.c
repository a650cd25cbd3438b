/*
 * bench: CPU-bound workloads for measuring guest MIPS, chosen on the
 * command line as "WORKLOAD ROUNDS" (after the kernel's file name, which
 * QEMU and ringback pass first):
 *   int     integer arithmetic and calls in registers (sieve, CRC-32, mixing)
 *   mem     memory-heavy: copies and scans over a 1 MiB buffer
 *   paging  paging on, every access to a different page, CR3 reloaded
 *           between rounds so the TLB refills from the page tables
 *   trap    privileged and sensitive instructions each iteration: port I/O
 *           (OUT 0x80, IN from the PIC), CLI/STI, PUSHF/POPF - the instructions a
 *           virtualizer traps on
 *   intoff  int with interrupts off the whole time, as early kernel code
 *           and kernels that poll run
 *   trapoff trap's loop with interrupts off the whole time (CLI, PUSHF/POPF,
 *           port I/O; no STI)
 *   datacode a loop whose counters sit on the same page as its code, as in
 *           small kernels: every store lands beside cached code
 * Each prints one checksum so the work cannot be optimised away and engines
 * can be compared on the result.  Interrupts are enabled (but for intoff
 * and trapoff) with every line masked: none arrives.
 */
#include "common/rt.h"

#define SIEVE 65536
static uint8_t composite[SIEVE];
static uint8_t buf[16384];
#define BIG (1u << 20)
static uint8_t big_a[BIG];
static uint8_t big_b[BIG];
static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t page_tables[8][1024] __attribute__((aligned(4096)));

static uint32_t sieve(void)
{
    memset(composite, 0, sizeof(composite));
    uint32_t count = 0;
    for (uint32_t i = 2; i < SIEVE; i++) {
        if (composite[i])
            continue;
        count++;
        for (uint32_t j = i * 2; j < SIEVE; j += i)
            composite[j] = 1;
    }
    return count;
}

static uint32_t crc32(const uint8_t *p, uint32_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
    }
    return ~crc;
}

static __attribute__((noinline)) uint32_t mix(uint32_t a, uint32_t b)
{
    return (a << 5) + (a >> 3) + b * 2654435761u;
}

static uint32_t work_int(uint32_t r, uint32_t sum)
{
    sum += sieve();
    buf[r % sizeof(buf)] ^= (uint8_t)sum;
    sum ^= crc32(buf, sizeof(buf));
    for (uint32_t i = 0; i < 20000; i++)
        sum = mix(sum, i);
    return sum;
}

static uint32_t work_mem(uint32_t r, uint32_t sum)
{
    memset(big_a, (int)(r & 0xFF), BIG);
    memcpy(big_b, big_a, BIG);
    const uint32_t *w = (const uint32_t *)big_b;
    for (uint32_t i = 0; i < BIG / 4; i += 3)
        sum = sum * 31 + w[i] + i;
    return sum;
}

static void paging_on(void)
{
    /* Identity-map 32 MiB with 4 KiB pages. */
    for (uint32_t t = 0; t < 8; t++) {
        for (uint32_t i = 0; i < 1024; i++)
            page_tables[t][i] = ((t * 1024 + i) << 12) | 3;
        page_dir[t] = (uint32_t)page_tables[t] | 3;
    }
    write_cr3((uint32_t)page_dir);
    write_cr0(read_cr0() | 0x80000000u);
}

static uint32_t work_paging(uint32_t r, uint32_t sum)
{
    /* Flush the TLB, then touch one word in each of 512 pages, 4 times. */
    write_cr3((uint32_t)page_dir);
    for (uint32_t pass = 0; pass < 4; pass++) {
        for (uint32_t p = 0; p < 512; p++) {
            uint32_t *word = (uint32_t *)(big_a + p * 2048 + (pass * 4));
            *word += p ^ r;
            sum += *word;
        }
    }
    return sum;
}

/* trap's loop, and trapoff's, which never sets IF. */
static uint32_t trap_loop(uint32_t r, uint32_t sum, int with_sti)
{
    for (uint32_t i = 0; i < 20000; i++) {
        uint32_t fl;
        if (with_sti)
            __asm__ volatile("cli\n\t"
                             "pushfl\n\t"
                             "popl %0\n\t"
                             "sti\n\t"
                             "pushl %0\n\t"
                             "popfl\n\t"
                             "cli"
                             : "=r"(fl)
                             :
                             : "memory", "cc");
        else
            __asm__ volatile("cli\n\t"
                             "pushfl\n\t"
                             "popl %0\n\t"
                             "pushl %0\n\t"
                             "popfl"
                             : "=r"(fl)
                             :
                             : "memory", "cc");
        outb(0x80, (uint8_t)i);
        sum = sum * 33 + (fl & 0x200) + inb(0x21) + r; /* the PIC mask: 0xFF */
    }
    return sum;
}

static uint32_t work_trap(uint32_t r, uint32_t sum) { return trap_loop(r, sum, 1); }

static uint32_t work_trapoff(uint32_t r, uint32_t sum) { return trap_loop(r, sum, 0); }

/* The datacode loop and its data on one page of .text: counter and sum are
 * written every iteration, right after the code that writes them. */
uint32_t datacode_loop(uint32_t n, uint32_t seed);
__asm__(".text\n"
        ".balign 4096\n"
        ".globl datacode_loop\n"
        "datacode_loop:\n\t"
        "movl 4(%esp), %ecx\n\t"
        "movl 8(%esp), %eax\n\t"
        "movl %eax, dc_sum\n"
        "1:\n\t"
        "movl dc_counter, %edx\n\t"
        "addl $1, %edx\n\t"
        "movl %edx, dc_counter\n\t"
        "xorl %edx, %eax\n\t"
        "roll $5, %eax\n\t"
        "addl %eax, dc_sum\n\t"
        "movl dc_sum, %eax\n\t"
        "decl %ecx\n\t"
        "jnz 1b\n\t"
        "ret\n"
        ".balign 16\n"
        "dc_counter: .long 0\n"
        "dc_sum: .long 0\n"
        ".balign 4096\n");

static uint32_t work_datacode(uint32_t r, uint32_t sum)
{
    return datacode_loop(200000, sum ^ r);
}

static const char *skip_word(const char *s)
{
    while (*s && *s != ' ')
        s++;
    while (*s == ' ')
        s++;
    return s;
}

static int word_is(const char *s, const char *w)
{
    while (*w && *s == *w) {
        s++;
        w++;
    }
    return *w == 0 && (*s == ' ' || *s == 0);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    const char *args = (mbi->flags & (1 << 2)) ? skip_word((const char *)mbi->cmdline) : "";
    const char *name = "int";
    uint32_t (*work)(uint32_t, uint32_t) = work_int;
    if (word_is(args, "mem")) {
        name = "mem";
        work = work_mem;
    } else if (word_is(args, "paging")) {
        name = "paging";
        work = work_paging;
        paging_on();
    } else if (word_is(args, "trap")) {
        name = "trap";
        work = work_trap;
    } else if (word_is(args, "intoff")) {
        name = "intoff";
        work = work_int;
    } else if (word_is(args, "trapoff")) {
        name = "trapoff";
        work = work_trapoff;
    } else if (word_is(args, "datacode")) {
        name = "datacode";
        work = work_datacode;
    }
    /* Run as kernel code usually runs, with interrupts enabled (a virtualizer
     * runs ring-0 code with IF clear on its slow path), but with every PIC
     * line masked: under QEMU the BIOS left the PIT ticking into the PIC.
     * intoff and trapoff keep them off. */
    pic_remap(0xFF, 0xFF);
    if (!word_is(args, "intoff") && !word_is(args, "trapoff"))
        sti();
    if (word_is(args, name))
        args = skip_word(args);
    uint32_t rounds = 0;
    while (*args >= '0' && *args <= '9')
        rounds = rounds * 10 + (uint32_t)(*args++ - '0');
    if (!rounds)
        rounds = 20;
    for (uint32_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    uint32_t sum = 0;
    for (uint32_t r = 0; r < rounds; r++)
        sum = work(r, sum);
    printf("bench %s: %u rounds, checksum %08x\n", name, rounds, sum);
    return EXIT_OK;
}
