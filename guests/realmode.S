/*
 * realmode: a flat 512-byte image entered in real mode at 0000:7C00 with
 * no BIOS services (it also carries the 0x55AA boot signature, so SeaBIOS
 * can boot the very same bytes as a disk).  It prints "real mode" on COM1
 * by direct port I/O, enables A20 through port 0x92, loads a GDT, sets
 * CR0.PE, far-jumps into 32-bit code, loads flat data segments, prints
 * "protected mode", checks that addresses 0x500 and 0x100500 are distinct
 * memory (A20 really on), and exits through port 0xF4 (0 = success).
 */
        .set COM1, 0x3F8

        .code16
        .section .text
        .globl _start
_start:
        cli
        ljmp $0, $1f            /* some BIOSes enter at 07C0:0000: normalise CS */
1:      xorw %ax, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw $0x7C00, %sp
        cld

        /* 16550 setup: 115200 8N1, FIFOs on, no interrupts. */
        movw $COM1 + 1, %dx
        xorb %al, %al
        outb %al, %dx
        movw $COM1 + 3, %dx
        movb $0x80, %al
        outb %al, %dx
        movw $COM1, %dx
        movb $1, %al
        outb %al, %dx
        movw $COM1 + 1, %dx
        xorb %al, %al
        outb %al, %dx
        movw $COM1 + 3, %dx
        movb $3, %al
        outb %al, %dx
        movw $COM1 + 2, %dx
        movb $0xC7, %al
        outb %al, %dx

        movw $msg_real, %si
        call puts16

        /* Fast A20: set bit 1, keep bit 0 clear (bit 0 would reset the CPU). */
        inb $0x92, %al
        orb $0x02, %al
        andb $0xFE, %al
        outb %al, $0x92

        lgdtl gdt_desc
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x08, $pm32      /* reloads CS with the 32-bit code segment */

/* Print the NUL-terminated string at ds:si (real mode). */
puts16:
        lodsb
        testb %al, %al
        jz 3f
        movb %al, %ah
        movw $COM1 + 5, %dx
2:      inb %dx, %al
        testb $0x20, %al        /* THRE */
        jz 2b
        movb %ah, %al
        movw $COM1, %dx
        outb %al, %dx
        jmp puts16
3:      ret

        .code32
pm32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        movl $0x7C00, %esp

        movl $msg_prot, %esi
        call puts32

        /* With A20 off, 0x100500 would alias 0x500. */
        movl $0x11111111, 0x500
        movl $0x22222222, 0x100500
        cmpl $0x11111111, 0x500
        jne fail
        cmpl $0x22222222, 0x100500
        jne fail
        movl $msg_a20, %esi
        call puts32
        xorl %eax, %eax
        jmp exit
fail:
        movl $msg_fail, %esi
        call puts32
        movl $1, %eax
exit:
        outl %eax, $0xF4
4:      cli
        hlt
        jmp 4b

/* Print the NUL-terminated string at esi (protected mode). */
puts32:
        lodsb
        testb %al, %al
        jz 6f
        movb %al, %ah
        movw $COM1 + 5, %dx
5:      inb %dx, %al
        testb $0x20, %al
        jz 5b
        movb %ah, %al
        movw $COM1, %dx
        outb %al, %dx
        jmp puts32
6:      ret

        .align 8
gdt:
        .quad 0                         /* null */
        .quad 0x00CF9A000000FFFF        /* 0x08: flat 4 GiB 32-bit code, ring 0 */
        .quad 0x00CF92000000FFFF        /* 0x10: flat 4 GiB data, ring 0 */
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt

msg_real:  .asciz "real mode\n"
msg_prot:  .asciz "protected mode\n"
msg_a20:   .asciz "a20 on: 0x500 and 0x100500 are distinct\n"
msg_fail:  .asciz "FAIL a20: 0x100500 aliases 0x500\n"

        .section .note.GNU-stack, "", @progbits
