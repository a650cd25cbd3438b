/*
 * Multiboot v1 entry for every ringback test kernel except realmode.
 * Holds the header the boot loader scans for (ELF kernel, so no a.out
 * address fields), sets up a stack, initialises the runtime (serial, GDT,
 * TSS, IDT) and calls kmain(magic, mbi).  kmain's return value becomes the
 * isa-debug-exit code, so "return 0" means success.
 */
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003       /* bit 0: page-align modules, bit 1: want memory info */

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .section .bss
        .align 16
stack_bottom:
        .skip 16384
        .globl stack_top
stack_top:

        .section .text
        .globl _start
_start:
        cli
        cld
        movl $stack_top, %esp
        /* Keep eax (magic) and ebx (info pointer) across the runtime init. */
        movl %eax, %esi
        movl %ebx, %edi
        pushl $2                /* known EFLAGS: only the always-one bit 1 */
        popfl
        call rt_init
        pushl %edi
        pushl %esi
        call kmain
        addl $8, %esp
        pushl %eax
        call exit_qemu          /* does not return */
1:      cli
        hlt
        jmp 1b

        /* No executable stack wanted (silences ld). */
        .section .note.GNU-stack, "", @progbits
