/*
 * syscall: checks privilege transitions.  The GDT has ring 3 code/data
 * segments and a TSS whose ss0:esp0 gives the kernel stack; IDT vector
 * 0x80 is an interrupt gate with DPL 3.  The kernel irets to a ring 3
 * function that calls write (eax=1, ebx=string) and exit (eax=2, ebx=code)
 * through int $0x80 and checks CS & 3 == 3.  Then ring 3 code executes
 * cli and an in instruction with IOPL 0: each raises #GP(0), which the
 * kernel's handler reports ("gp from ring 3 at <eip> ...") before
 * abandoning the task.  Exit 0 when every step matched.
 */
#include "common/rt.h"

static uint8_t user_stack[4096] __attribute__((aligned(16)));
static int bad;
static int esp0_checked;

/* Ring 3 code that must fault; the labels give the exact faulting eip. */
extern char user_cli[], user_cli_insn[], user_in[], user_in_insn[];
__asm__(".text\n"
        "user_cli:\n"
        "    movl $0x1234, %eax\n"
        "user_cli_insn:\n"
        "    cli\n"
        "    jmp .\n"
        "user_in:\n"
        "user_in_insn:\n"
        "    inb $0x80, %al\n"
        "    jmp .\n");

static uint32_t sys(uint32_t nr, uint32_t arg)
{
    uint32_t ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(arg) : "memory");
    return ret;
}

static __attribute__((used, noinline)) void user_main(void)
{
    sys(1, (uint32_t) "hello from ring 3\n");
    uint32_t cs, ss;
    __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    if ((cs & 3) == 3 && (ss & 3) == 3)
        sys(1, (uint32_t) "ring 3 check: cs & 3 == 3 and ss & 3 == 3\n");
    else
        sys(1, (uint32_t) "FAIL ring 3 check: cs or ss RPL is not 3\n");
    uint32_t n = sys(1, (uint32_t) "write returns the length\n");
    sys(2, n == 25 ? 42 : 99);
    for (;;)
        ;
}

static void syscall_handler(struct regs *r)
{
    if (!esp0_checked) {
        /* We must be running on the stack the TSS named. */
        uint32_t esp;
        __asm__ volatile("mov %%esp, %0" : "=r"(esp));
        int ok = esp < kernel_tss.esp0 && esp > kernel_tss.esp0 - 8192;
        printf("syscall runs on the TSS esp0 stack: %s\n", ok ? "ok" : "FAIL");
        ok &= (r->cs & 3) == 3 && r->user_ss == SEL_UDATA && r->user_esp > (uint32_t)user_stack &&
              r->user_esp <= (uint32_t)user_stack + sizeof user_stack;
        printf("frame has user cs/ss/esp: %s\n", ok ? "ok" : "FAIL");
        if (!ok)
            bad++;
        esp0_checked = 1;
    }
    switch (r->eax) {
    case 1: {
        const char *s = (const char *)r->ebx;
        puts(s);
        r->eax = strlen(s);
        break;
    }
    case 2:
        user_return(r->ebx);
    default:
        printf("FAIL unknown syscall %u\n", r->eax);
        exit_qemu(EXIT_FAIL);
    }
}

static void gp_handler(struct regs *r)
{
    printf("gp from ring %u at %08x vector %u error code %x\n", r->cs & 3, r->eip, r->vector, r->err);
    if ((r->cs & 3) != 3) {
        puts("FAIL #GP in the kernel\n");
        exit_qemu(EXIT_FAIL);
    }
    user_return(r->eip);
}

int kmain(uint32_t magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    puts("syscall test\n");
    idt_set_handler(0x80, syscall_handler);
    idt_set_dpl(0x80, 3);
    idt_set_handler(13, gp_handler);

    uint32_t top = (uint32_t)(user_stack + sizeof user_stack);
    uint32_t code = user_run((uint32_t)user_main, top, 0x002);
    printf("ring 3 task exited with code %u\n", code);
    if (code != 42)
        bad++;

    printf("ring 3 cli at %08x:\n", (uint32_t)user_cli_insn);
    uint32_t at = user_run((uint32_t)user_cli, top, 0x002);
    if (at != (uint32_t)user_cli_insn)
        bad++;

    printf("ring 3 inb at %08x:\n", (uint32_t)user_in_insn);
    at = user_run((uint32_t)user_in, top, 0x002);
    if (at != (uint32_t)user_in_insn)
        bad++;

    if (bad) {
        printf("FAIL %d problem(s)\n", bad);
        return EXIT_FAIL;
    }
    puts("syscall: all checks passed\n");
    return EXIT_OK;
}
