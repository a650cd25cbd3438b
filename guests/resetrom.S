/*
 * resetrom: a 64 KiB firmware ROM started from the reset vector, as a CPU
 * test ROM or SeaBIOS is with QEMU's -bios.  It checks the reset state
 * (CR0, EFLAGS), that the copy at 0xF0000 takes no writes while RAM
 * does, and, in flat protected mode, that the image also ends at 4 GiB;
 * it prints a line per check to COM1 and exits through isa-debug-exit
 * with 0 when all passed, 1 otherwise.
 */
        .set ROM, 0xF0000               /* where segment F000 starts */
        .code16
        .text
        .globl _start
_start:
        movl %cr0, %ebx                 /* before anything changes it */
        pushfl
        popl %ecx
        cli
        xorw %ax, %ax
        movw %ax, %ss
        movw $0x7000, %sp
        movw $0xF000, %ax
        movw %ax, %ds
        xorw %di, %di                   /* failures */
        movw $msg_hello, %si
        call puts16

        cmpl $0x60000010, %ebx
        movw $msg_cr0, %si
        call report16
        cmpl $0x00000002, %ecx
        movw $msg_eflags, %si
        call report16

        /* The ROM copy below 1 MiB ignores writes. */
        movb probe, %al
        notb probe
        cmpb probe, %al
        movw $msg_rom, %si
        call report16

        /* RAM takes them. */
        xorw %ax, %ax
        movw %ax, %es
        movl $0x12345678, %es:0x500
        cmpl $0x12345678, %es:0x500
        movw $msg_ram, %si
        call report16

        /* Flat protected mode: the image's last bytes at 4 GiB - 16 are the
         * reset vector's jump, the same bytes as at 0xFFFF0. */
        lgdtl %cs:gdtr
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x08, $(ROM + pm32)

        .code32
pm32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movl $0x7000, %esp
        movl 0xFFFFFFF0, %eax
        cmpl 0xFFFF0, %eax
        jne 1f
        movl 0xFFFF0000, %eax
        cmpl 0xF0000, %eax
1:      movl $(ROM + msg_high), %esi
        call report32
        movl $(ROM + msg_done), %esi
        call puts32
        movw %di, %ax
        movw $0xF4, %dx
        outb %al, %dx
        hlt

/* One body for both modes: prints the NUL-terminated string at (E)SI to
 * COM1; and "<message>: ok" or ": FAIL" by ZF, counting failures in DI.
 * \base is where the code segment starts (0 in flat 32-bit mode). */
        .macro PRINTERS puts, report, base, si
\report:
        pushf
        call \puts
        popf
        mov $(\base + msg_ok), \si
        je 1f
        incw %di
        mov $(\base + msg_fail), \si
1:      jmp \puts

\puts:
        lodsb
        testb %al, %al
        jz 2f
        movb %al, %ah
        movw $0x3FD, %dx
1:      inb %dx, %al
        testb $0x20, %al
        jz 1b
        movw $0x3F8, %dx
        movb %ah, %al
        outb %al, %dx
        jmp \puts
2:      ret
        .endm

        .code16
        PRINTERS puts16, report16, 0, %si
        .code32
        PRINTERS puts32, report32, ROM, %esi

        .balign 8
gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF        /* flat 32-bit code */
        .quad 0x00CF92000000FFFF        /* flat data */
gdtr:
        .word gdtr - gdt - 1
        .long ROM + gdt

probe:  .byte 0x5A
msg_hello:  .asciz "reset vector: running the ROM at F000\n"
msg_cr0:    .asciz "CR0 after reset is 60000010"
msg_eflags: .asciz "EFLAGS after reset is 00000002"
msg_rom:    .asciz "the ROM below 1 MiB takes no writes"
msg_ram:    .asciz "RAM takes writes"
msg_high:   .asciz "the ROM also ends at 4 GiB"
msg_ok:     .asciz ": ok\n"
msg_fail:   .asciz ": FAIL\n"
msg_done:   .asciz "resetrom: done\n"

        .section .reset, "ax"
        .code16
        ljmp $0xF000, $_start
