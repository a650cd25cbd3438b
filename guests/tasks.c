/*
 * tasks: hardware task switching as a 32-bit kernel uses it, printing what
 * the CPU left in the TSSs, the flags and the descriptors, to be diffed
 * against QEMU:
 *  - a CALL to a TSS and IRET back (NT, the back link, busy bits, DR7's
 *    local enables cleared);
 *  - a JMP to a TSS and a JMP back (busy bits move, no link);
 *  - INT n through a task gate, and IRET back;
 *  - a double fault through a task gate (as Linux's i386 handler is):
 *    the faulting task's saved EIP, the error code on the new task's
 *    stack, and IRET back to a repaired task;
 *  - a 16-bit TSS: what it saves, 16 bits at a time;
 *  - the debug trap flag (T) of a TSS: #DB before the new task's first
 *    instruction, DR6.BT set;
 *  - #TS: a TSS with a short limit (in the old task), a new task whose DS
 *    is not a data segment (in the new task), an IRET whose back link is
 *    not busy; #GP for a JMP to a busy TSS.
 * Exit 0 when every check passed.
 */
#include "common/rt.h"

#define SEL_A 0x28 /* the kernel's TSS, rt.c's */
#define SEL_B 0x30
#define SEL_C 0x38
#define SEL_DF 0x40
#define SEL_SHORT 0x48
#define SEL_GATE_B 0x50 /* a task gate in the GDT naming task B */
#define SEL_D 0x58      /* a 16-bit TSS */
#define SEL_E 0x60      /* a TSS with the debug trap flag */
#define SEL_DCODE 0x68  /* task D's code: a few bytes, based where they are */

/* The 16-bit TSS (SDM Vol. 3A, figure 7-11). */
struct tss16 {
    uint16_t prev, sp0, ss0, sp1, ss1, sp2, ss2, ip, flags, ax, cx, dx, bx, sp, bp, si, di, es, cs, ss, ds, ldt;
};
static struct tss16 tss_d;
/* Task D: iret (back along the link), then jump back to it. */
static const uint8_t code_d[] = {0xCF, 0xEB, 0xFD};
static struct tss tss_e;
static uint8_t stack_e[4096] __attribute__((aligned(16)));
static volatile uint32_t e_runs, db_eip, db_dr6, db_tr;

static uint64_t gdt[16];
static struct tss tss_b, tss_c, tss_df, tss_short;
static uint8_t stack_b[4096] __attribute__((aligned(16)));
static uint8_t stack_c[4096] __attribute__((aligned(16)));
static uint8_t stack_df[4096] __attribute__((aligned(16)));

static int failures;

static void check(int ok, const char *what)
{
    printf("%s: %s\n", what, ok ? "ok" : "FAIL");
    if (!ok)
        failures++;
}

static uint64_t desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) | ((uint64_t)access << 40) |
           ((uint64_t)((limit >> 16) & 0xF) << 48) | ((uint64_t)(flags & 0xF0) << 48) |
           ((uint64_t)(base >> 24) << 56);
}

static uint64_t task_gate(uint16_t tss_sel) { return ((uint64_t)tss_sel << 16) | ((uint64_t)0x85 << 40); }

static int busy(uint16_t sel) { return ((gdt[sel >> 3] >> 40) & 0x2) != 0; }

static uint16_t str(void)
{
    uint16_t v;
    __asm__ volatile("str %0" : "=r"(v));
    return v;
}

static uint32_t eflags(void)
{
    uint32_t v;
    __asm__ volatile("pushfl; popl %0" : "=r"(v));
    return v;
}

static void set_task(struct tss *t, void (*entry)(void), uint8_t *stack)
{
    memset(t, 0, sizeof *t);
    t->eip = (uint32_t)entry;
    t->eflags = 0x2;
    t->esp = (uint32_t)(stack + 4096);
    t->cs = SEL_KCODE;
    t->ss = t->ds = t->es = t->fs = t->gs = SEL_KDATA;
    t->cr3 = read_cr3();
    t->iomap_base = sizeof *t;
}

/* What the tasks saw, printed by task A. */
static volatile uint32_t b_link, b_flags, b_runs, b_dr7, c_runs, df_link, df_eip, ts_err, ts_tr, ts_vec;
volatile uint32_t df_err;
/* Where task A faults in the double-fault test, and where it resumes. */
static volatile uint32_t fault_at, resume_at;

/* Task B: entered by CALL, INT or the task gate; returns with IRET. */
static void task_b(void)
{
    for (;;) {
        b_runs++;
        b_link = tss_b.prev;
        b_flags = eflags();
        uint32_t dr7;
        __asm__ volatile("mov %%dr7, %0" : "=r"(dr7));
        b_dr7 = dr7;
        __asm__ volatile("iret");
    }
}

/* Task C: entered by JMP; JMPs back to task A. */
static void task_c(void)
{
    for (;;) {
        c_runs++;
        __asm__ volatile("ljmp $0x28, $0");
    }
}

/* The double-fault task: takes the error code from its stack, notes what
 * it finds, repairs the faulting task (its EIP moves past the fault, IDT
 * entry 13 becomes present again) and returns to it. */
static uint64_t *idt_base;
static uint64_t saved_gp_gate;

void task_df_body(void);
void task_df(void);
__asm__(".text\n"
        ".globl task_df\n"
        "task_df:\n\t"
        "popl df_err\n\t"
        "call task_df_body\n\t"
        "iret\n\t"
        "jmp task_df\n");

void task_df_body(void)
{
    df_link = tss_df.prev;
    df_eip = kernel_tss.eip;
    kernel_tss.eip = resume_at;
    idt_base[13] = saved_gp_gate;
}

/* Task E: entered with its debug trap flag set. */
static void task_e(void)
{
    for (;;) {
        e_runs++;
        __asm__ volatile("iret");
    }
}

static void db_handler(struct regs *r)
{
    uint32_t dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    db_dr6 = dr6;
    db_eip = r->eip;
    db_tr = str();
    __asm__ volatile("mov %0, %%dr6" : : "r"(0u));
}

/* Recovery points for the faults task A provokes in itself. */
static volatile uint32_t recover_eip;
static void fault_handler(struct regs *r)
{
    ts_vec = r->vector;
    ts_err = r->err;
    ts_tr = str();
    r->eip = recover_eip;
    /* A task whose segment loads failed has unusable selectors left. */
    r->ds = r->es = r->fs = r->gs = SEL_KDATA;
}

/* Where task B resumes after the #TS in its own context: it returns. */
static void task_b_return(void)
{
    __asm__ volatile("iret");
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("tasks test\n");

    /* A bigger GDT: rt.c's six entries, then the tasks'. */
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) gdtr, idtr;
    __asm__ volatile("sgdt %0" : "=m"(gdtr));
    memcpy(gdt, (void *)gdtr.base, gdtr.limit + 1);
    set_task(&tss_b, task_b, stack_b);
    set_task(&tss_c, task_c, stack_c);
    set_task(&tss_df, task_df, stack_df);
    set_task(&tss_short, task_b, stack_b);
    gdt[SEL_B >> 3] = desc((uint32_t)&tss_b, 0x67, 0x89, 0);
    gdt[SEL_C >> 3] = desc((uint32_t)&tss_c, 0x67, 0x89, 0);
    gdt[SEL_DF >> 3] = desc((uint32_t)&tss_df, 0x67, 0x89, 0);
    gdt[SEL_SHORT >> 3] = desc((uint32_t)&tss_short, 0x60, 0x89, 0);
    gdt[SEL_GATE_B >> 3] = task_gate(SEL_B);
    memset(&tss_d, 0, sizeof tss_d);
    tss_d.ip = 0;
    tss_d.flags = 0x2;
    tss_d.sp = 0x1000;
    tss_d.cs = SEL_DCODE;
    tss_d.ss = tss_d.ds = tss_d.es = SEL_KDATA;
    tss_d.ax = 0x1234;
    gdt[SEL_D >> 3] = desc((uint32_t)&tss_d, sizeof tss_d - 1, 0x81, 0);
    gdt[SEL_DCODE >> 3] = desc((uint32_t)code_d, 0xFF, 0x9A, 0x40);
    set_task(&tss_e, task_e, stack_e);
    tss_e.trap = 1;
    gdt[SEL_E >> 3] = desc((uint32_t)&tss_e, 0x67, 0x89, 0);
    gdtr.base = (uint32_t)gdt;
    gdtr.limit = sizeof gdt - 1;
    __asm__ volatile("lgdt %0" : : "m"(gdtr));
    __asm__ volatile("sidt %0" : "=m"(idtr));
    idt_base = (uint64_t *)idtr.base;
    printf("task A: TR %02x, busy %u\n", str(), busy(SEL_A));

    /* CALL to a TSS, IRET back. The local breakpoint enables (DR7 bits 0,
     * 2, 4, 6) belong to a task and are cleared by the switch; the global
     * one (bit 1) stays. No breakpoint address is set up to hit. */
    __asm__ volatile("mov %0, %%dr7" : : "r"(0x457u));
    __asm__ volatile("lcall $0x30, $0" ::: "memory");
    __asm__ volatile("mov %0, %%dr7" : : "r"(0x400u));
    printf("DR7 in B: %03x\n", b_dr7);
    printf("CALL: B ran %u, link %02x, NT in B %u; back in A: TR %02x, NT %u\n", b_runs, b_link,
           (b_flags >> 14) & 1, str(), (eflags() >> 14) & 1);
    printf("after IRET: A busy %u, B busy %u, CR0.TS %u\n", busy(SEL_A), busy(SEL_B), (read_cr0() >> 3) & 1);
    __asm__ volatile("clts");

    /* CALL through a task gate in the GDT. */
    __asm__ volatile("lcall $0x50, $0" ::: "memory");
    printf("CALL through a task gate: B ran %u, link %02x\n", b_runs, b_link);

    /* JMP to a TSS and back. */
    __asm__ volatile("ljmp $0x38, $0\n" ::: "memory");
    printf("JMP: C ran %u; A busy %u, C busy %u, link in C %02x\n", c_runs, busy(SEL_A), busy(SEL_C),
           tss_c.prev);

    /* INT n through a task gate in the IDT. */
    idt_base[0x50] = task_gate(SEL_B);
    __asm__ volatile("int $0x50" ::: "memory");
    printf("INT through a task gate: B ran %u, link %02x, NT in B %u\n", b_runs, b_link, (b_flags >> 14) & 1);

    /* A 16-bit TSS: D returns at once; it saved IP 1 and its AX. */
    __asm__ volatile("lcall $0x58, $0" ::: "memory");
    printf("16-bit TSS: link %02x, saved IP %04x, AX %04x, flags %04x; A busy %u, D busy %u\n", tss_d.prev, tss_d.ip,
           tss_d.ax, tss_d.flags, busy(SEL_A), busy(SEL_D));

    /* The debug trap flag: #DB in task E before its first instruction. */
    idt_set_handler(1, db_handler);
    __asm__ volatile("lcall $0x60, $0" ::: "memory");
    printf("T flag: #DB at E's first instruction %s, DR6.BT %u, in task %02x; E ran %u\n",
           db_eip == (uint32_t)task_e ? "yes" : "no", (db_dr6 >> 15) & 1, db_tr, e_runs);
    __asm__ volatile("clts");

    /* Double fault through a task gate: #GP with IDT entry 13 not present
     * is #NP while delivering it, and #GP then #NP is a double fault. */
    idt_base[8] = task_gate(SEL_DF);
    saved_gp_gate = idt_base[13];
    idt_base[13] &= ~(1ull << 47);
    __asm__ volatile("movl $1f, %0\n\t"
                     "movl $2f, %1\n\t"
                     "movw $0x7ff8, %%ax\n\t"
                     "1: movw %%ax, %%ds\n\t"
                     "2:"
                     : "=m"(fault_at), "=m"(resume_at)
                     :
                     : "eax", "memory");
    printf("double fault: error %u, link %02x, saved EIP at the fault %s, DF busy after %u\n", df_err, df_link,
           df_eip == fault_at ? "yes" : "no", busy(SEL_DF));
    check((idt_base[13] >> 47) & 1, "the double-fault task repaired the IDT");
    __asm__ volatile("clts");

    /* #TS: a TSS whose limit is below 0x67, seen in task A. */
    idt_set_handler(10, fault_handler);
    idt_set_handler(13, fault_handler);
    __asm__ volatile("movl $1f, %0\n\t"
                     "lcall $0x48, $0\n\t"
                     "1:"
                     : "=m"(recover_eip)
                     :
                     : "memory");
    printf("short TSS: vector %u, error %02x, TR %02x\n", ts_vec, ts_err, ts_tr);

    /* #TS in the new task: task B's DS names a TSS. */
    tss_b.ds = SEL_C;
    tss_b.eip = (uint32_t)task_b;
    recover_eip = (uint32_t)task_b_return;
    ts_vec = 0;
    __asm__ volatile("lcall $0x30, $0" ::: "memory");
    printf("bad DS in the new task: vector %u, error %02x, in task %02x; back in %02x\n", ts_vec, ts_err, ts_tr,
           str());
    tss_b.ds = SEL_KDATA;

    /* JMP to a busy TSS: #GP naming it. */
    ts_vec = 0;
    __asm__ volatile("movl $1f, %0\n\t"
                     "ljmp $0x28, $0\n\t"
                     "1:"
                     : "=m"(recover_eip)
                     :
                     : "memory");
    printf("JMP to the busy TSS: vector %u, error %02x\n", ts_vec, ts_err);

    /* IRET with NT whose back link is not a busy TSS: #TS naming it. */
    kernel_tss.prev = SEL_C;
    ts_vec = 0;
    __asm__ volatile("movl $1f, %0\n\t"
                     "pushfl\n\t"
                     "orl $0x4000, (%%esp)\n\t"
                     "popfl\n\t"
                     "iret\n\t"
                     "1:"
                     : "=m"(recover_eip)
                     :
                     : "memory");
    __asm__ volatile("pushfl; andl $~0x4000, (%%esp); popfl" ::: "memory");
    printf("IRET to a task that is not busy: vector %u, error %02x\n", ts_vec, ts_err);

    printf("%s\n", failures ? "tasks: FAIL" : "tasks: all ok");
    return failures ? EXIT_FAIL : EXIT_OK;
}
