/*
 * aout: a multiboot kernel in the "a.out kludge" form (header flag 16): a
 * flat binary whose header gives the load address, load end, bss end and
 * entry point, so the loader needs no ELF parsing.  Entered in 32-bit
 * protected mode, it checks the multiboot magic, that its bss was zeroed,
 * and that the info structure reports memory, prints a line on COM1 and
 * exits through port 0xF4 (0 = success).
 */
        .set COM1, 0x3F8
        .set FLAGS, 0x00010003          /* page-align modules, memory info, a.out kludge */
        .set MAGIC, 0x1BADB002

        .code32
        .section .text
        .globl _start
header:
        .long MAGIC
        .long FLAGS
        .long -(MAGIC + FLAGS)
        .long header                    /* header_addr */
        .long header                    /* load_addr: the file starts with the header */
        .long load_end                  /* load_end_addr */
        .long bss_end                   /* bss_end_addr */
        .long _start                    /* entry_addr */

_start:
        movl $stack_top, %esp
        cmpl $0x2BADB002, %eax
        jne fail
        testl $1, (%ebx)                /* flags bit 0: mem_lower/mem_upper valid */
        jz fail
        /* The loader must have zeroed the bss (the file does not hold it). */
        movl $bss_start, %edi
1:      cmpl $bss_end, %edi
        jae 2f
        cmpl $0, (%edi)
        jne fail
        addl $4, %edi
        jmp 1b
2:      movl $msg_ok, %esi
        call puts
        xorl %eax, %eax
        jmp exit
fail:   movl $msg_fail, %esi
        call puts
        movl $1, %eax
exit:   movw $0xF4, %dx
        outl %eax, %dx
3:      cli
        hlt
        jmp 3b

puts:   movw $COM1 + 5, %dx
1:      inb %dx, %al
        testb $0x20, %al
        jz 1b
        lodsb
        testb %al, %al
        jz 2f
        movw $COM1, %dx
        outb %al, %dx
        jmp puts
2:      ret

msg_ok:   .asciz "a.out kludge kernel: loaded, bss zeroed, info ok\n"
msg_fail: .asciz "a.out kludge kernel: FAIL\n"
        .balign 4
load_end:

        .section .bss
        .balign 4
bss_start:
        .skip 8192
stack_top:
bss_end:
