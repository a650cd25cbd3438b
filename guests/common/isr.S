/*
 * Interrupt entry stubs and ring 3 entry/exit for the ringback test
 * kernels.  Each of the 256 stubs is 16 bytes long (so the IDT can be
 * filled as isr_stubs + 16 * vector), pushes a dummy error code where the
 * CPU does not push one, then the vector, and jumps to a common path that
 * saves all registers into a struct regs and calls isr_dispatch().
 */
        .section .text
        .globl isr_stubs
        .align 16
isr_stubs:
        .set vec, 0
        .rept 256
        .balign 16
        /* Vectors 8, 10-14, 17, 21, 29, 30 get an error code from the CPU. */
        .if !((vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30))
        pushl $0
        .endif
        pushl $vec
        jmp isr_common
        .set vec, vec + 1
        .endr

isr_common:
        pusha
        pushl %ds
        pushl %es
        pushl %fs
        pushl %gs
        /* Ring 3 may have left user selectors in the data registers. */
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        cld
        pushl %esp              /* struct regs * */
        call isr_dispatch
        addl $4, %esp
        popl %gs
        popl %fs
        popl %es
        popl %ds
        popa
        addl $8, %esp           /* vector and error code */
        iret

/* uint32_t user_run(uint32_t eip, uint32_t esp, uint32_t eflags) */
        .globl user_run
user_run:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        pushfl
        movl %esp, user_saved_esp
        movl 24(%esp), %ecx     /* eip */
        movl 28(%esp), %edx     /* esp */
        movl 32(%esp), %eax     /* eflags */
        /* Loading DPL 3 data selectors now is allowed at CPL 0 and keeps
         * them valid across the privilege change. */
        movw $0x23, %bx
        movw %bx, %ds
        movw %bx, %es
        movw %bx, %fs
        movw %bx, %gs
        pushl $0x23             /* ss */
        pushl %edx              /* esp */
        pushl %eax              /* eflags */
        pushl $0x1B             /* cs */
        pushl %ecx              /* eip */
        iret

/* void user_return(uint32_t value): called from a kernel handler; drops
 * the interrupt frame and returns value from user_run(). */
        .globl user_return
user_return:
        movl 4(%esp), %eax
        movl user_saved_esp, %esp
        movw $0x10, %bx
        movw %bx, %ds
        movw %bx, %es
        movw %bx, %fs
        movw %bx, %gs
        popfl
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

        .section .bss
        .align 4
user_saved_esp:
        .long 0

        /* No executable stack wanted (silences ld). */
        .section .note.GNU-stack, "", @progbits
